package main

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// On a small VM a bulk measurement's number depends mostly on where the
// scheduler puts the sending and the receiving thread: both on one CPU, or
// each on its own, gave 11 and 22 Gbit/s for the same kernel path in one
// run. The bulk and UDP measurements therefore bind stream i's sender to
// CPU i mod 2 and its receiver to the other one, the same in the kernel and
// the l2shim runs (softirqs follow the sender: veth delivers on the sending
// CPU). -pin=false leaves placement to the scheduler.

// placement says whether to bind threads to CPUs (-pin).
type placement struct{ on bool }

// senderCPU and receiverCPU are stream i's CPUs.
func (p placement) senderCPU(i int) int   { return i % 2 }
func (p placement) receiverCPU(i int) int { return (i + 1) % 2 }

// run calls f on an OS thread bound to cpu, and gives the thread its old
// CPU set back afterwards. Without pinning, or on one CPU, it just calls f.
func (p placement) run(cpu int, f func()) {
	if !p.on || runtime.NumCPU() < 2 {
		f()
		return
	}
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		f()
		return
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		f()
		return
	}
	defer func() {
		// A thread that cannot get its CPU set back stays locked: it ends
		// with its goroutine instead of serving others.
		if unix.SchedSetaffinity(0, &old) == nil {
			runtime.UnlockOSThread()
		}
	}()
	f()
}

// receivers is a tcpServer's pin for handlers that receive: connection k
// of a measurement on stream k's receiver CPU.
func (p placement) receivers() func(k int, f func()) {
	return func(k int, f func()) { p.run(p.receiverCPU(k), f) }
}

// senders is the same for handlers that send.
func (p placement) senders() func(k int, f func()) {
	return func(k int, f func()) { p.run(p.senderCPU(k), f) }
}
