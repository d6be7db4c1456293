package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestExitCodes checks the exit codes every command promises: 0 success, 1 runtime failure,
// 2 bad usage or config, with the reason on stderr.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[shim]\nmode = \"sideways\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "usage: l2shim"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"help"}, exitOK, "commands:"},
		{[]string{"version"}, exitOK, "l2shim devel go"},
		{[]string{"--version"}, exitOK, "l2shim devel go"},
		{[]string{"check", "-c", filepath.Join(dir, "missing.toml")}, exitUsage, "cannot read the file"},
		{[]string{"check", "-c", bad}, exitUsage, `bad.toml:2: shim.mode: "sideways" is not a mode`},
		{[]string{"run", "-c", bad}, exitUsage, "shim.mode"},
		{[]string{"run", "-c", bad, "--log-format", "xml"}, exitUsage, "unknown log format"},
		{[]string{"check", "-c", bad, "extra"}, exitUsage, "unexpected argument"},
		{[]string{"status", "-s", filepath.Join(dir, "none.sock")}, exitRuntime, "is it running?"},
		{[]string{"drain"}, exitUsage, "usage: l2shim drain NAME"},
		{[]string{"undrain", "a", "b"}, exitUsage, "usage: l2shim undrain NAME"},
		{[]string{"reload", "x"}, exitUsage, "unexpected argument"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != c.code || !strings.Contains(out.String()+errb.String(), c.want) {
			t.Errorf("l2shim %v: exit %d, output %q; want exit %d and %q", c.args, code, out.String()+errb.String(), c.code, c.want)
		}
	}
}

// TestForwardReloads: a SIGHUP before the shim runs is kept (once, however many arrive) and
// applied when it runs; later ones reload each; nothing happens after done.
func TestForwardReloads(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hup := make(chan os.Signal, 1)
	ready, done := make(chan struct{}), make(chan struct{})
	reloads := make(chan struct{}, 16)
	finished := make(chan struct{})
	go func() {
		forwardReloads(hup, ready, done, log, func() { reloads <- struct{}{} })
		close(finished)
	}()
	expect := func(n int, what string) {
		t.Helper()
		for i := 0; i < n; i++ {
			select {
			case <-reloads:
			case <-time.After(2 * time.Second):
				t.Fatalf("%s: %d reloads, want %d", what, i, n)
			}
		}
		select {
		case <-reloads:
			t.Fatalf("%s: more than %d reloads", what, n)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for range 3 {
		hup <- syscall.SIGHUP
	}
	expect(0, "SIGHUPs while starting")
	close(ready)
	expect(1, "once running, the SIGHUPs kept while starting")
	hup <- syscall.SIGHUP
	expect(1, "a SIGHUP while running")
	close(done)
	select {
	case <-finished:
	case <-time.After(2 * time.Second):
		t.Fatal("forwardReloads still running after done")
	}

	// A start that fails (done before ready) drops a kept SIGHUP.
	hup2 := make(chan os.Signal, 1)
	done2 := make(chan struct{})
	hup2 <- syscall.SIGHUP
	ended := make(chan struct{})
	go func() {
		forwardReloads(hup2, make(chan struct{}), done2, log, func() { reloads <- struct{}{} })
		close(ended)
	}()
	time.Sleep(20 * time.Millisecond)
	close(done2)
	<-ended
	expect(0, "a failed start")
}

// startForwarding runs forwardReloads on new channels; reloads counts its reloads, finished
// closes when it returns.
func startForwarding() (hup chan os.Signal, ready, done chan struct{}, reloads *atomic.Int32, finished chan struct{}) {
	hup = make(chan os.Signal, 1)
	ready, done, finished = make(chan struct{}), make(chan struct{}), make(chan struct{})
	reloads = new(atomic.Int32)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		defer close(finished)
		forwardReloads(hup, ready, done, log, func() { reloads.Add(1) })
	}()
	return hup, ready, done, reloads, finished
}

// TestForwardReloadsLateSIGHUP: a SIGHUP sent while starting that reaches the channel only
// after the shim became ready (Go delivers signals a moment after the kernel took them; CI
// saw TestSIGHUPWhileStarting reload twice) joins the kept reload; one a while later is a
// reload of its own.
func TestForwardReloadsLateSIGHUP(t *testing.T) {
	hup, ready, done, reloads, finished := startForwarding()
	hup <- syscall.SIGHUP
	close(ready)
	time.Sleep(reloadSettle / 5)
	hup <- syscall.SIGHUP // late, within the settling
	for deadline := time.Now().Add(2 * time.Second); reloads.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(2 * reloadSettle)
	if n := reloads.Load(); n != 1 {
		t.Fatalf("%d reloads after SIGHUPs while starting and one just after, want 1", n)
	}
	hup <- syscall.SIGHUP
	for deadline := time.Now().Add(2 * time.Second); reloads.Load() == 1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := reloads.Load(); n != 2 {
		t.Fatalf("%d reloads after a SIGHUP while running, want 2", n)
	}
	close(done)
	<-finished
}

// TestForwardReloadsQueuedAtReady: SIGHUPs while starting, one of them still queued when the
// shim becomes ready (select may then pick ready first), make one reload, not two.
func TestForwardReloadsQueuedAtReady(t *testing.T) {
	for i := 0; i < 40; i++ { // each waits out reloadSettle
		hup, ready, done, reloads, finished := startForwarding()
		hup <- syscall.SIGHUP // taken while starting: kept
		hup <- syscall.SIGHUP // the buffer held one: queued once the first was taken
		close(ready)
		// Wait for the reload (bounded: a loaded machine may take a while to schedule
		// it), then give a wrong second one time to happen before stopping.
		for deadline := time.Now().Add(2 * time.Second); reloads.Load() == 0 && time.Now().Before(deadline); {
			time.Sleep(50 * time.Microsecond)
		}
		time.Sleep(time.Millisecond)
		close(done)
		<-finished
		if n := reloads.Load(); n != 1 {
			t.Fatalf("try %d: %d reloads for SIGHUPs sent while starting, want 1", i, n)
		}
	}
}
