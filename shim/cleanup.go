package shim

import "github.com/l2shim/l2shim/fastpath"

// Cleanup removes what l2shim may have left on this host: the hooks and maps pinned under
// pinDir ("" for none) and the capture veths of this network namespace. It must not run while
// an l2shim runs (that one would lose its hooks). It reports what it removed.
func Cleanup(pinDir string) (links int, veths []string, err error) {
	if pinDir != "" {
		links, err = fastpath.Cleanup(pinDir)
	}
	v, verr := removeLeftovers()
	if err == nil {
		err = verr
	}
	return links, v, err
}
