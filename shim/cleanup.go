package shim

import (
	"errors"
	"fmt"

	"github.com/l2shim/l2shim/fastpath"
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
	lock, err := lockInstance(control, false)
	if err != nil {
		if errors.Is(err, ErrRunning) {
			err = fmt.Errorf("%w: stop it first; nothing was removed", err)
		}
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
