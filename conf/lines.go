package conf

import (
	"strconv"
	"strings"
)

// lineIndex maps the path of every table, array-of-tables element and key in a TOML document
// to the line (1-based) where it is defined. BurntSushi/toml keeps key positions private and
// does not tell the elements of an array of tables apart, so the index comes from a small
// scanner of its own. The scanner runs only on documents the toml package has accepted; on
// anything else it never panics, but the lines it reports may be wrong.
//
// Paths are built with pathKey: the key components, where an element of an array (of tables, or
// an inline array of tables) is the extra component elem(i).
type lineIndex map[string]int

// pathKey joins path components into a lineIndex key.
func pathKey(parts ...string) string { return strings.Join(parts, "\x00") }

// elem is the path component of the i-th (0-based) element of an array.
func elem(i int) string { return "\x01" + strconv.Itoa(i) }

// lookup returns the line of the longest prefix of parts that the index knows, or 0.
func (x lineIndex) lookup(parts ...string) int {
	for n := len(parts); n > 0; n-- {
		if l, ok := x[pathKey(parts[:n]...)]; ok {
			return l
		}
	}
	return 0
}

// lineScanner is the state of indexLines.
type lineScanner struct {
	src    string
	pos    int
	line   int
	index  lineIndex
	arrays map[string]int // pathKey of an array of tables (indices resolved) → its last element
}

// indexLines builds the line index of a TOML document.
func indexLines(src string) lineIndex {
	s := &lineScanner{src: src, line: 1, index: lineIndex{}, arrays: map[string]int{}}
	var table []string
	for s.pos < len(s.src) {
		s.skipSpaceNewlinesComments()
		if s.pos >= len(s.src) {
			break
		}
		start := s.pos
		if s.peek() == '[' {
			table = s.header()
		} else {
			key := s.key()
			s.skipSpace()
			if s.peek() == '=' {
				s.pos++
				s.skipSpace()
				path := append(append([]string{}, table...), key...)
				s.record(path)
				s.value(path)
			}
		}
		s.skipToLineEnd()
		if s.pos == start { // never loop without progress
			s.advance()
		}
	}
	return s.index
}

func (s *lineScanner) peek() byte {
	if s.pos < len(s.src) {
		return s.src[s.pos]
	}
	return 0
}

func (s *lineScanner) hasPrefix(p string) bool { return strings.HasPrefix(s.src[s.pos:], p) }

// advance moves past one byte, counting lines.
func (s *lineScanner) advance() {
	if s.pos < len(s.src) {
		if s.src[s.pos] == '\n' {
			s.line++
		}
		s.pos++
	}
}

func (s *lineScanner) skipSpace() {
	for s.pos < len(s.src) && (s.src[s.pos] == ' ' || s.src[s.pos] == '\t') {
		s.pos++
	}
}

func (s *lineScanner) skipComment() {
	if s.peek() == '#' {
		for s.pos < len(s.src) && s.src[s.pos] != '\n' {
			s.pos++
		}
	}
}

func (s *lineScanner) skipSpaceNewlinesComments() {
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.advance()
		case '#':
			s.skipComment()
		default:
			return
		}
	}
}

// skipToLineEnd skips trailing space and a comment up to (not past) the end of the line.
func (s *lineScanner) skipToLineEnd() {
	s.skipSpace()
	s.skipComment()
}

// record notes the current line for path unless the path is already known.
func (s *lineScanner) record(path []string) {
	k := pathKey(path...)
	if _, ok := s.index[k]; !ok {
		s.index[k] = s.line
	}
}

// header reads a [table] or [[array]] header and returns the table's resolved path.
func (s *lineScanner) header() []string {
	s.pos++ // '['
	array := s.peek() == '['
	if array {
		s.pos++
	}
	s.skipSpace()
	key := s.key()
	s.skipSpace()
	for s.pos < len(s.src) && s.src[s.pos] == ']' {
		s.pos++
	}
	var path []string
	for i, k := range key {
		path = append(path, k)
		if array && i == len(key)-1 {
			ak := pathKey(path...)
			n := 0
			if last, ok := s.arrays[ak]; ok {
				n = last + 1
			}
			s.arrays[ak] = n
			s.record(path)
			path = append(path, elem(n))
			break
		}
		if last, ok := s.arrays[pathKey(path...)]; ok {
			path = append(path, elem(last))
		}
	}
	s.record(path)
	return path
}

// key reads a possibly dotted key and returns its components.
func (s *lineScanner) key() []string {
	var parts []string
	for s.pos < len(s.src) {
		s.skipSpace()
		switch c := s.peek(); {
		case c == '"':
			parts = append(parts, s.basicString())
		case c == '\'':
			parts = append(parts, s.literalString())
		case isBareKeyByte(c):
			start := s.pos
			for s.pos < len(s.src) && isBareKeyByte(s.src[s.pos]) {
				s.pos++
			}
			parts = append(parts, s.src[start:s.pos])
		default:
			return parts
		}
		s.skipSpace()
		if s.peek() != '.' {
			return parts
		}
		s.pos++
	}
	return parts
}

func isBareKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// basicString reads a "basic string" and returns its decoded value (escapes Go does not know are
// kept as written; only keys use the value).
func (s *lineScanner) basicString() string {
	start := s.pos
	s.pos++
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case '\\':
			s.pos += 2
			continue
		case '"':
			s.pos++
			raw := s.src[start:s.pos]
			if v, err := strconv.Unquote(raw); err == nil {
				return v
			}
			return raw[1 : len(raw)-1]
		case '\n':
			return s.src[start+1 : s.pos]
		}
		s.pos++
	}
	if s.pos > len(s.src) {
		s.pos = len(s.src)
	}
	return s.src[min(start+1, len(s.src)):]
}

// literalString reads a 'literal string' and returns its value.
func (s *lineScanner) literalString() string {
	s.pos++
	start := s.pos
	for s.pos < len(s.src) && s.src[s.pos] != '\'' && s.src[s.pos] != '\n' {
		s.pos++
	}
	v := s.src[start:s.pos]
	if s.peek() == '\'' {
		s.pos++
	}
	return v
}

// multiline skips a multi-line string opened by delim (three double or three single quotes),
// counting its lines.
func (s *lineScanner) multiline(delim string, escapes bool) {
	s.pos += 3
	for s.pos < len(s.src) {
		if escapes && s.src[s.pos] == '\\' {
			s.advance()
			s.advance()
			continue
		}
		if s.hasPrefix(delim) {
			s.pos += 3
			// Up to two more quotes belong to the string's content.
			for i := 0; i < 2 && s.peek() == delim[0]; i++ {
				s.pos++
			}
			return
		}
		s.advance()
	}
}

// value skips the value of the key at path, indexing the keys of inline tables and the elements
// of arrays of inline tables.
func (s *lineScanner) value(path []string) {
	switch {
	case s.hasPrefix(`"""`):
		s.multiline(`"""`, true)
	case s.hasPrefix(`'''`):
		s.multiline(`'''`, false)
	case s.peek() == '"':
		s.basicString()
	case s.peek() == '\'':
		s.literalString()
	case s.peek() == '[':
		s.array(path)
	case s.peek() == '{':
		s.inlineTable(path)
	default:
		for s.pos < len(s.src) && !strings.ContainsRune(",]}\n\r#", rune(s.src[s.pos])) {
			s.pos++
		}
	}
}

func (s *lineScanner) array(path []string) {
	s.pos++ // '['
	for i := 0; s.pos < len(s.src); i++ {
		s.skipSpaceNewlinesComments()
		if s.peek() == ']' {
			s.pos++
			return
		}
		start := s.pos
		el := append(append([]string{}, path...), elem(i))
		s.record(el)
		s.value(el)
		s.skipSpaceNewlinesComments()
		if s.peek() == ',' {
			s.pos++
		}
		if s.pos == start {
			s.advance()
		}
	}
}

func (s *lineScanner) inlineTable(path []string) {
	s.pos++ // '{'
	for s.pos < len(s.src) {
		s.skipSpaceNewlinesComments()
		if s.peek() == '}' {
			s.pos++
			return
		}
		start := s.pos
		key := s.key()
		s.skipSpace()
		if s.peek() == '=' {
			p := append(append([]string{}, path...), key...)
			s.record(p)
			s.pos++
			s.skipSpaceNewlinesComments()
			s.value(p)
		}
		s.skipSpaceNewlinesComments()
		if s.peek() == ',' {
			s.pos++
		}
		if s.pos == start {
			s.advance()
		}
	}
}
