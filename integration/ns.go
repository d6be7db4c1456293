// Package integration builds throwaway network-namespace topologies from Go
// (netlink + netns), runs l2shim inside them and drives traffic through it.
//
// It is used by the end-to-end tests in this directory, by the benchmark in
// integration/bench and by `l2shim demo` (RunDemo).
//
// Every host is a network namespace with a unique name; nothing is ever
// created in, and no test traffic ever crosses, the root namespace: veth pairs
// are created by netlink handles bound to the namespaces themselves, with
// their peer placed directly in the other namespace.
package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a named network namespace created by this package
// (/run/netns/NAME, so `ip netns exec NAME` works on it).
type NS struct {
	Name string

	handle netns.NsHandle
	nl     *netlink.Handle

	mu      sync.Mutex
	closers []io.Closer
	closed  bool
}

// errThreadLost reports that a thread could not be switched back to its
// original namespace; the thread stays locked and dies with its goroutine.
var errThreadLost = errors.New("could not restore the thread's network namespace")

// onOwnThread runs fn on a fresh goroutine locked to its OS thread and
// switches the thread back to its original network namespace afterwards. If
// that fails the thread is left locked so the Go runtime destroys it rather
// than reusing a thread that sits in the wrong namespace.
func onOwnThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, errThreadLost, err)
			return // thread stays locked: it exits with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// randSuffix returns n random hex characters.
func randSuffix(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

// NewNS creates the named network namespace name. The name must not exist.
// Loopback is brought up and IPv6 is disabled in it (all and default), so
// links created later carry no IPv6 noise (router solicitations, DAD, MLD).
func NewNS(name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/ ") || len(name) > 64 {
		return nil, fmt.Errorf("bad netns name %q", name)
	}
	n := &NS{Name: name, handle: netns.None()}
	err := onOwnThread(func() error {
		h, err := netns.NewNamed(name)
		if err != nil {
			// NewNamed leaves the placeholder file behind if the mount fails.
			if _, serr := os.Stat(filepath.Join("/run/netns", name)); serr == nil && !errors.Is(err, os.ErrExist) {
				os.Remove(filepath.Join("/run/netns", name))
			}
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		n.handle = h
		return nil
	})
	if err == nil {
		writeOwner(name)
	}
	if err != nil {
		if n.handle.IsOpen() {
			n.handle.Close()
			netns.DeleteNamed(name)
		}
		return nil, err
	}
	nl, err := netlink.NewHandleAt(n.handle)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	n.nl = nl
	for _, kv := range [][2]string{
		{"net.ipv6.conf.all.disable_ipv6", "1"},
		{"net.ipv6.conf.default.disable_ipv6", "1"},
	} {
		if err := n.Sysctl(kv[0], kv[1]); err != nil && !errors.Is(err, os.ErrNotExist) {
			n.Close()
			return nil, err
		}
	}
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("%s: lo up: %w", name, err)
	}
	return n, nil
}

// Handle returns the namespace's file handle (owned by n).
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Netlink returns a netlink handle operating inside the namespace.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Do runs fn on an OS thread switched into the namespace and switches the
// thread back afterwards. Sockets created by fn stay in the namespace and may
// be used from any goroutine afterwards.
func (n *NS) Do(fn func() error) error {
	if !n.handle.IsOpen() {
		return fmt.Errorf("netns %s is closed", n.Name)
	}
	return onOwnThread(func() error {
		if err := netns.Set(n.handle); err != nil {
			return fmt.Errorf("enter netns %s: %w", n.Name, err)
		}
		return fn()
	})
}

// Command returns `ip netns exec NAME name args...`.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs `name args...` in the namespace, bounded by 10 s, with stdin
// (may be nil) as its input, and returns its combined output. Its error
// names the namespace, the command and what it printed.
func (n *NS) Run(stdin io.Reader, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := n.Command(ctx, name, args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %v: %s", n.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sysctl writes value to the sysctl key (dotted form, e.g.
// "net.ipv4.ip_forward") inside the namespace. /proc/sys/net follows the
// network namespace of the thread that opens it.
func (n *NS) Sysctl(key, value string) error {
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return n.Do(func() error {
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("%s: sysctl %s=%s: %w", n.Name, key, value, err)
		}
		return nil
	})
}

// ReadSysctl reads a sysctl inside the namespace.
func (n *NS) ReadSysctl(key string) (string, error) {
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	var s string
	err := n.Do(func() error {
		b, err := os.ReadFile(p)
		s = strings.TrimSpace(string(b))
		return err
	})
	return s, err
}

// AddCloser registers c to be closed when the namespace is closed (servers,
// sockets living in it).
func (n *NS) AddCloser(c io.Closer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		c.Close()
		return
	}
	n.closers = append(n.closers, c)
}

// Close closes everything registered with AddCloser and deletes the
// namespace (its links go with it). It is idempotent.
func (n *NS) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	closers := n.closers
	n.closers = nil
	n.mu.Unlock()

	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i].Close()
	}
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.handle.IsOpen() {
		n.handle.Close()
		n.handle = netns.None()
	}
	if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("delete netns %s: %w", n.Name, err))
	}
	os.Remove(filepath.Join("/run/netns", n.Name))
	os.Remove(filepath.Join(ownerDir, n.Name))
	return errors.Join(errs...)
}

// ownerDir records which process created each namespace, so that namespaces
// left by a process that died without cleaning up (a test binary killed by
// its timeout) can be recognised and removed by CleanupStale.
const ownerDir = "/run/l2shim-integration"

func writeOwner(name string) {
	if err := os.MkdirAll(ownerDir, 0o755); err == nil {
		os.WriteFile(filepath.Join(ownerDir, name), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
}

// CleanupStale deletes namespaces named prefix* that this package created in
// a process that no longer exists, and returns their names. Namespaces of
// live processes, and namespaces this package did not create, are left alone.
func CleanupStale(prefix string) []string {
	ents, err := os.ReadDir(ownerDir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(ownerDir, name))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
			continue // owner alive
		}
		if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
			if err := netns.DeleteNamed(name); err != nil {
				continue
			}
			removed = append(removed, name)
		}
		os.Remove(filepath.Join(ownerDir, name))
	}
	return removed
}

// LinkNames lists the names of the links in the namespace.
func (n *NS) LinkNames() ([]string, error) {
	links, err := n.nl.LinkList()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names, nil
}
