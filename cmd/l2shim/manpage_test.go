package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestManPage: dist/l2shim.8 has a section for every command the usage lists, names every
// flag the usage shows, and (where groff is installed) renders without warnings.
func TestManPage(t *testing.T) {
	b, err := os.ReadFile("../../dist/l2shim.8")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	_, cmds, ok := strings.Cut(usage, "commands:\n")
	if !ok {
		t.Fatal("the usage has no commands: section")
	}
	cmds, _, _ = strings.Cut(cmds, "\n\n")
	command := regexp.MustCompile(`^  ([a-z]+)\b`)
	flagRE := regexp.MustCompile(`(?:^|[\s\[])(--?[a-z][a-z-]*)`)
	n := 0
	for _, line := range strings.Split(cmds, "\n") {
		if m := command.FindStringSubmatch(line); m != nil {
			n++
			if !strings.Contains(page, "\n.SS "+m[1]+"\n") {
				t.Errorf("the manual page has no section for %s", m[1])
			}
		}
		if strings.HasPrefix(line, "                   ") {
			continue // a description, not a synopsis
		}
		for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
			if roff := strings.ReplaceAll(m[1], "-", `\-`); !strings.Contains(page, roff) {
				t.Errorf("the manual page does not name %s (%q)", m[1], strings.TrimSpace(line))
			}
		}
	}
	if n < 10 {
		t.Fatalf("found %d commands in the usage; the parser is wrong", n)
	}
	if _, err := exec.LookPath("groff"); err != nil {
		t.Log("no groff here: the page's rendering is not checked")
		return
	}
	out, err := exec.Command("groff", "-man", "-ww", "-z", "../../dist/l2shim.8").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, out)
	}
}
