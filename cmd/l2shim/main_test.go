package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
