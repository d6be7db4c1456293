package shim

import (
	"errors"

	"github.com/l2shim/l2shim/fastpath"
)

// Cleaned is what Cleanup removed.
type Cleaned struct {
	Links   int      // pinned TCX links detached
	Filters int      // tc filters (attach mode tc) removed
	Veths   []string // capture veths removed
}

// Cleanup removes what l2shim may have left on this host: the hooks and maps pinned under
// pinDir ("" for none), l2shim's tc filters on every interface of this network namespace
// (clsact qdiscs stay) and its capture veths. It must not run while an l2shim runs (that one
// would lose its hooks).
func Cleanup(pinDir string) (Cleaned, error) {
	var r Cleaned
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
