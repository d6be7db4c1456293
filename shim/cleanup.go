package shim

import (
	"errors"
	"fmt"
	"os"

	"github.com/l2shim/l2shim/fastpath"
	"golang.org/x/sys/unix"
)

// ErrRunning is Cleanup's refusal: an l2shim holds the instance lock of the control socket.
var ErrRunning = errors.New("an l2shim is running")

// Cleaned is what Cleanup removed.
type Cleaned struct {
	Links   int      // pinned TCX links detached
	Filters int      // tc filters (attach mode tc) removed
	Veths   []string // capture veths removed
}

// Cleanup removes what l2shim may have left on this host: the hooks and maps pinned under
// pinDir ("" for none), l2shim's tc filters on every interface of this network namespace
// (clsact qdiscs stay) and its capture veths. An l2shim whose control socket is control would
// lose its hooks: while one runs (it holds the lock next to the socket), Cleanup removes
// nothing and returns an error wrapping ErrRunning. It holds that lock while it works, so no
// l2shim starts under it.
func Cleanup(pinDir, control string) (Cleaned, error) {
	var r Cleaned
	lock, err := lockIfPresent(control)
	if err != nil {
		return r, err
	}
	if lock != nil {
		defer lock.Close()
	}
	var errs []error
	if pinDir != "" {
		n, err := fastpath.Cleanup(pinDir)
		r.Links = n
		errs = append(errs, err)
	}
	// The veths first: their filters go with them, and those counted are the hooks'.
	v, err := removeLeftovers()
	r.Veths = v
	errs = append(errs, err)
	n, err := fastpath.CleanupTC()
	r.Filters = n
	errs = append(errs, err)
	return r, errors.Join(errs...)
}

// lockIfPresent takes the instance lock of control (see lockInstance) if its file exists: an
// l2shim creates it before it touches anything, so without it none ran with that socket.
func lockIfPresent(control string) (*os.File, error) {
	path := control + ".lock"
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (it holds %s): stop it first; nothing was removed", ErrRunning, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
