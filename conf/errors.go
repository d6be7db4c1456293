package conf

import (
	"sort"
	"strconv"
	"strings"
)

// Error is one problem in a configuration file.
type Error struct {
	File string // the file's path (or the name given to Parse)
	Line int    // 1-based line, or 0 when the problem has no single line
	Key  string // dotted key as users write it, e.g. "shim.mode" or "gateway[2].address"; may be ""
	Msg  string // what is wrong, and when possible how to fix it
}

// Error renders the problem as "FILE:LINE: KEY: MSG", leaving out ":LINE" when Line is 0 and
// "KEY: " when Key is empty.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File == "" {
		b.WriteString("config")
	} else {
		b.WriteString(e.File)
	}
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a configuration file. It is the error Load, Parse and
// CheckHost return.
type Errors []*Error

// Error renders every problem on its own line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the individual problems, so that errors.As finds an *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// sort orders the problems by line, keeping the order of discovery within a line; problems
// without a line come last.
func (es Errors) sort() {
	sort.SliceStable(es, func(i, j int) bool {
		li, lj := es[i].Line, es[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
}

func itoa(i int) string { return strconv.Itoa(i) }
