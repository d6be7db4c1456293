package dist

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"go/build"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The Debian package (mkdeb.sh, `make deb`): these tests build it for amd64 and arm64 into a
// temporary directory (never dist/out), inspect it with dpkg-deb, and install, upgrade, remove
// and purge it with dpkg --root in a temporary tree. Nothing touches the host's dpkg database,
// /etc or systemd: TestDebInstall checks the host's dpkg status file is unchanged, and every
// systemctl the maintainer scripts might call is a fake that logs its arguments.

const testVersion = "1.2.3~test1"

var (
	debOnce sync.Once
	debDir  string
	debErr  error
	debs    = map[string]string{} // arch -> path of the .deb
)

// buildDebs builds both packages once for all the tests of this file.
func buildDebs(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the package tests build l2shim twice")
	}
	for _, tool := range []string{"go", "make", "dpkg-deb", "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s (.ci/run installs it): %v", tool, err)
		}
	}
	debOnce.Do(func() {
		debDir, debErr = os.MkdirTemp("", "l2shim-debtest-")
		if debErr != nil {
			return
		}
		for _, arch := range []string{"amd64", "arm64"} {
			cmd := exec.Command("sh", "./mkdeb.sh", "-a", arch, "-v", testVersion, "-o", debDir)
			out, err := cmd.CombinedOutput()
			if err != nil {
				debErr = &buildError{arch, err, out}
				return
			}
			debs[arch] = strings.TrimSpace(string(out[bytes.LastIndexByte(bytes.TrimSpace(out), '\n')+1:]))
		}
	})
	if debErr != nil {
		t.Fatal(debErr)
	}
}

type buildError struct {
	arch string
	err  error
	out  []byte
}

func (e *buildError) Error() string {
	return "mkdeb.sh -a " + e.arch + ": " + e.err.Error() + "\n" + string(e.out)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if debDir != "" {
		os.RemoveAll(debDir)
	}
	os.Exit(code)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// wantFiles are the paths the package installs, besides directories.
var wantFiles = []string{
	"/etc/l2shim/l2shim.toml",
	"/usr/lib/systemd/system/l2shim.service",
	"/usr/sbin/l2shim",
	"/usr/share/doc/l2shim/LICENSE",
	"/usr/share/doc/l2shim/README.md",
	"/usr/share/doc/l2shim/changelog.gz",
	"/usr/share/doc/l2shim/copyright",
	"/usr/share/doc/l2shim/l2shim.toml",
	"/usr/share/lintian/overrides/l2shim",
	"/usr/share/man/man8/l2shim.8.gz",
}

func init() {
	docs, _ := filepath.Glob("../docs/*.md")
	for _, d := range docs {
		wantFiles = append(wantFiles, "/usr/share/doc/l2shim/docs/"+filepath.Base(d))
	}
	slices.Sort(wantFiles)
}

// TestDebContents checks each package's control fields, its conffiles, maintainer scripts and
// file list, and the binary inside: an ELF for the package's machine, static, reporting the
// package's version.
func TestDebContents(t *testing.T) {
	buildDebs(t)
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for arch, deb := range debs {
		t.Run(arch, func(t *testing.T) {
			if want := "l2shim_" + testVersion + "_" + arch + ".deb"; filepath.Base(deb) != want {
				t.Errorf("package file %s, want %s", filepath.Base(deb), want)
			}
			for field, want := range map[string]string{"Package": "l2shim", "Version": testVersion, "Architecture": arch} {
				if got := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, field)); got != want {
					t.Errorf("%s: %s, want %s", field, got, want)
				}
			}
			if depends := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, "Depends")); depends != "" {
				t.Errorf("Depends: %s; the binary is static and needs nothing", depends)
			}
			info := run(t, "dpkg-deb", "--info", deb)
			for _, s := range []string{"conffiles", "postinst", "prerm", "postrm", "md5sums"} {
				if !regexp.MustCompile(`(?m)^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+` + s + `\b`).MatchString(info) {
					t.Errorf("dpkg-deb --info lists no %s:\n%s", s, info)
				}
			}
			ctl := t.TempDir()
			run(t, "dpkg-deb", "--control", deb, ctl)
			if b, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); string(b) != "/etc/l2shim/l2shim.toml\n" {
				t.Errorf("conffiles = %q, want /etc/l2shim/l2shim.toml", b)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				if fi, err := os.Stat(filepath.Join(ctl, s)); err != nil || fi.Mode().Perm() != 0o755 {
					t.Errorf("%s: %v, mode %v; want 0755", s, err, fi)
				}
			}

			// Files: every one root's, none missing, none extra.
			var files []string
			for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
				f := strings.Fields(line)
				if len(f) < 6 {
					t.Fatalf("dpkg-deb --contents line %q", line)
				}
				if f[1] != "root/root" {
					t.Errorf("%s is owned by %s", f[5], f[1])
				}
				if !strings.HasPrefix(f[0], "d") {
					files = append(files, strings.TrimPrefix(f[5], "."))
				}
			}
			slices.Sort(files)
			if !slices.Equal(files, wantFiles) {
				t.Errorf("the package holds\n  %s\nwant\n  %s", strings.Join(files, "\n  "), strings.Join(wantFiles, "\n  "))
			}

			x := t.TempDir()
			run(t, "dpkg-deb", "--extract", deb, x)
			bin := filepath.Join(x, "usr/sbin/l2shim")
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Machine != machine[arch] || f.Class != elf.ELFCLASS64 {
				t.Errorf("usr/sbin/l2shim is %v %v, want %v", f.Class, f.Machine, machine[arch])
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("usr/sbin/l2shim is dynamically linked (%v)", p.Type)
				}
			}
			if repo, _ := filepath.Abs(".."); bytes.Contains(read(t, bin), []byte(repo+"/")) {
				t.Errorf("usr/sbin/l2shim holds the build path %s (built without -trimpath?)", repo)
			}
			if arch == hostArch() {
				if out := run(t, bin, "version"); !strings.HasPrefix(out, "l2shim "+testVersion+" go") || !strings.Contains(out, "linux/"+arch) {
					t.Errorf("l2shim version: %q, want l2shim %s ... linux/%s", out, testVersion, arch)
				}
			}

			// The unit is make install's, with /usr/sbin (the tree is PREFIX=/usr's).
			unit, err := os.ReadFile(filepath.Join(x, "usr/lib/systemd/system/l2shim.service"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(unit, []byte("\nExecStart=/usr/sbin/l2shim run -c /etc/l2shim/l2shim.toml --pin-dir /run/l2shim/pins\n")) || bytes.Contains(unit, []byte("/usr/local/")) {
				t.Error("the unit's ExecStart is not /usr/sbin/l2shim, or it still names /usr/local/")
			}
			if conf, _ := os.ReadFile(filepath.Join(x, "etc/l2shim/l2shim.toml")); !bytes.Equal(conf, read(t, example)) {
				t.Error("/etc/l2shim/l2shim.toml differs from dist/l2shim.toml")
			}
			copyright, _ := os.ReadFile(filepath.Join(x, "usr/share/doc/l2shim/copyright"))
			for _, s := range []string{"MIT License", "the Go standard library", "github.com/cilium/ebpf",
				"github.com/vishvananda/netlink", "/usr/share/common-licenses/Apache-2.0"} {
				if !bytes.Contains(copyright, []byte(s)) {
					t.Errorf("the copyright file does not mention %s", s)
				}
			}
			// The Apache License's terms are referred to, not copied (Debian policy 12.5); the
			// copyright lines around them stay.
			if bytes.Contains(copyright, []byte("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION")) {
				t.Error("the copyright file holds the Apache License's full text")
			}
			if !bytes.Contains(copyright, []byte("Vishvananda Ishaya")) {
				t.Error("the copyright file lost netlink's copyright line")
			}
			checkChangelog(t, filepath.Join(x, "usr/share/doc/l2shim/changelog.gz"))
		})
	}
}

// checkChangelog checks a native package's changelog: one entry for testVersion, in the
// format dpkg-parsechangelog reads (a header line, an item, a trailer with an RFC 2822 date).
func checkChangelog(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("changelog.gz: %v", err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("changelog.gz: %v", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) != 5 || lines[0] != "l2shim ("+testVersion+") unstable; urgency=medium" || lines[1] != "" ||
		!strings.HasPrefix(lines[2], "  * ") || lines[3] != "" {
		t.Fatalf("changelog:\n%s", b)
	}
	m := regexp.MustCompile(`^ -- .+ <.+@.+>  (.+)$`).FindStringSubmatch(lines[4])
	if m == nil {
		t.Fatalf("changelog trailer %q", lines[4])
	}
	if _, err := time.Parse("Mon, 2 Jan 2006 15:04:05 -0700", m[1]); err != nil {
		t.Errorf("changelog date %q: %v", m[1], err)
	}
}

func hostArch() string {
	out, _ := exec.Command("go", "env", "GOHOSTARCH").Output()
	return strings.TrimSpace(string(out))
}

// TestDebInstall installs the amd64 package into an empty tree with dpkg --root, edits the
// installed configuration, installs the package over itself (what an upgrade does: the
// conffile is kept), removes it (the edited conffile stays) and purges it (nothing stays).
//
// dpkg --root runs maintainer scripts chrooted into the tree, which has no /bin/sh; with
// --force-script-chrootless it runs them here with DPKG_ROOT=DIR, which the scripts honour by
// leaving the running system alone. A fake systemctl first in PATH records any call: there
// must be none.
func TestDebInstall(t *testing.T) {
	buildDebs(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root (dpkg --root chowns the files to root)")
	}
	if _, err := os.Stat("/var/lib/dpkg/status"); err != nil {
		t.Fatalf("not a Debian system? %v", err)
	}
	hostStatus := sha256File(t, "/var/lib/dpkg/status")

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fake := t.TempDir()
	calls := filepath.Join(fake, "calls")
	if err := os.WriteFile(filepath.Join(fake, "systemctl"), []byte("#!/bin/sh\necho \"systemctl $*\" >>"+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) string {
		t.Helper()
		// --path-include: a minimal image's dpkg.cfg.d may exclude /usr/share/doc.
		all := append([]string{"--root=" + root, "--force-script-chrootless", "--force-not-root",
			"--log=" + filepath.Join(root, "dpkg.log"), "--path-include=/*"}, args...)
		cmd := exec.Command("dpkg", all...)
		cmd.Env = append(os.Environ(), "PATH="+fake+":"+os.Getenv("PATH"), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	status := func() string {
		t.Helper()
		out, _ := exec.Command("dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${Status} ${Version}", "l2shim").CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	present := func() []string {
		var got []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel := "/" + strings.TrimPrefix(p, root+"/")
			if d.IsDir() && rel == "/var" {
				return filepath.SkipDir // dpkg's own database
			}
			if !d.IsDir() && rel != "/dpkg.log" {
				got = append(got, rel)
			}
			return nil
		})
		slices.Sort(got)
		return got
	}

	out := dpkg("--install", debs["amd64"])
	if !strings.Contains(out, "l2shim check") || !strings.Contains(out, "systemctl enable --now l2shim") {
		t.Errorf("the first install printed no hint to check the file and enable l2shim:\n%s", out)
	}
	if got := status(); got != "install ok installed "+testVersion {
		t.Errorf("after install: %q", got)
	}
	if got := present(); !slices.Equal(got, wantFiles) {
		t.Errorf("installed:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(wantFiles, "\n  "))
	}
	conf := filepath.Join(root, "etc/l2shim/l2shim.toml")
	if b, _ := os.ReadFile(conf); !bytes.Equal(b, read(t, example)) {
		t.Error("the installed /etc/l2shim/l2shim.toml is not the example")
	}
	edited := append(read(t, example), "# edited by the administrator\n"...)
	if err := os.WriteFile(conf, edited, 0o644); err != nil {
		t.Fatal(err)
	}

	out = dpkg("--install", debs["amd64"]) // over itself: postinst configure with the old version
	if strings.Contains(out, "systemctl enable") {
		t.Errorf("the upgrade printed the first-install hint:\n%s", out)
	}
	if b, _ := os.ReadFile(conf); !bytes.Equal(b, edited) {
		t.Error("the upgrade replaced the edited /etc/l2shim/l2shim.toml")
	}
	if got := status(); got != "install ok installed "+testVersion {
		t.Errorf("after the upgrade: %q", got)
	}

	dpkg("--remove", "l2shim")
	if got := present(); !slices.Equal(got, []string{"/etc/l2shim/l2shim.toml"}) {
		t.Errorf("after remove: %v, want only the configuration", got)
	}
	if b, _ := os.ReadFile(conf); !bytes.Equal(b, edited) {
		t.Error("remove changed the edited configuration")
	}
	if got := status(); !strings.HasPrefix(got, "deinstall ok config-files") {
		t.Errorf("after remove: %q", got)
	}

	dpkg("--purge", "l2shim")
	if got := present(); len(got) > 0 {
		t.Errorf("after purge: %v left", got)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/l2shim")); !os.IsNotExist(err) {
		t.Errorf("after purge /etc/l2shim is still there: %v", err)
	}
	if got := status(); strings.Contains(got, "installed") || strings.Contains(got, "config-files") {
		t.Errorf("after purge: %q", got)
	}

	if b, err := os.ReadFile(calls); err == nil {
		t.Errorf("the maintainer scripts called systemctl under DPKG_ROOT:\n%s", b)
	}
	if sha256File(t, "/var/lib/dpkg/status") != hostStatus {
		t.Error("the host's /var/lib/dpkg/status changed during the test")
	}
}

func sha256File(t *testing.T, name string) [32]byte {
	t.Helper()
	return sha256.Sum256(read(t, name))
}

// TestDebUnitVerify runs systemd-analyze verify on the unit the package installs. verify
// fails when ExecStart's binary does not exist, and /usr/sbin/l2shim is not installed here, so
// it checks a temporary copy of the unit whose commands name the binary extracted from the
// package. verify exits 0 on mere warnings (an unknown value is "ignoring"), so any line about
// the unit fails the test too.
func TestDebUnitVerify(t *testing.T) {
	buildDebs(t)
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("needs systemd-analyze (.ci/run installs systemd): %v", err)
	}
	x := t.TempDir()
	run(t, "dpkg-deb", "--extract", debs["amd64"], x)
	unit := read(t, filepath.Join(x, "usr/lib/systemd/system/l2shim.service"))
	bin := filepath.Join(x, "usr/sbin/l2shim")
	copyDir := t.TempDir()
	path := filepath.Join(copyDir, "l2shim.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/sbin/l2shim"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "l2shim") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	if len(out) > 0 {
		t.Logf("systemd-analyze verify:\n%s", out)
	}
}

// TestArm64EmbedsBpfel checks that linux/arm64 builds the little-endian eBPF objects, the same
// ones as amd64: the build constraints of the generated fastpath files select
// fastpath_bpfel.go (which embeds fastpath_bpfel.o) and not the big-endian one, and the arm64
// binary in the package holds fastpath_bpfel.o byte for byte.
func TestArm64EmbedsBpfel(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		ctx := build.Default
		ctx.GOOS, ctx.GOARCH, ctx.CgoEnabled = "linux", arch, false
		pkg, err := ctx.ImportDir("../fastpath", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(pkg.GoFiles, "fastpath_bpfel.go") || slices.Contains(pkg.GoFiles, "fastpath_bpfeb.go") {
			t.Errorf("linux/%s builds %v; want fastpath_bpfel.go and not fastpath_bpfeb.go", arch, pkg.GoFiles)
		}
		if !slices.Contains(pkg.EmbedPatterns, "fastpath_bpfel.o") || slices.Contains(pkg.EmbedPatterns, "fastpath_bpfeb.o") {
			t.Errorf("linux/%s embeds %v; want fastpath_bpfel.o only", arch, pkg.EmbedPatterns)
		}
	}

	buildDebs(t)
	x := t.TempDir()
	run(t, "dpkg-deb", "--extract", debs["arm64"], x)
	bin := read(t, filepath.Join(x, "usr/sbin/l2shim"))
	el, eb := read(t, "../fastpath/fastpath_bpfel.o"), read(t, "../fastpath/fastpath_bpfeb.o")
	if !bytes.Contains(bin, el) {
		t.Error("the arm64 binary does not contain fastpath/fastpath_bpfel.o")
	}
	if !bytes.Equal(el, eb) && bytes.Contains(bin, eb) {
		t.Error("the arm64 binary contains fastpath/fastpath_bpfeb.o")
	}
}

// TestVersion checks version.sh's mapping of git describe to a Debian version, and that
// dpkg agrees each result is valid and that they sort as releases should.
func TestVersion(t *testing.T) {
	cases := []struct{ describe, want string }{
		{"v1.2.3", "1.2.3"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"v1.2.3-4-gabcdef1", "1.2.3+4.gabcdef1"},
		{"v1.2.3-rc1-4-gabcdef1", "1.2.3~rc1+4.gabcdef1"},
		{"abcdef1", "0.0.0~git20261201.abcdef1"},
		{"abcdef1-dirty", "0.0.0~git20261201.abcdef1+dirty"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"v1.2.3-4-gabcdef1-dirty", "1.2.3+4.gabcdef1.dirty"},
		{"2.0", "2.0"},
	}
	for _, c := range cases {
		out, err := exec.Command("sh", "./version.sh", c.describe, "20261201").CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != c.want {
			t.Errorf("version.sh %s: %q (%v), want %s", c.describe, got, err, c.want)
		}
	}
	for _, bad := range []string{"release-1", "vx"} {
		if out, err := exec.Command("sh", "./version.sh", bad, "20261201").CombinedOutput(); err == nil {
			t.Errorf("version.sh %s: %q, want a failure", bad, out)
		}
	}
	// This tree: whatever git says, a valid version.
	out, err := exec.Command("sh", "./version.sh").Output()
	if err != nil {
		t.Fatalf("version.sh: %v", err)
	}
	v := strings.TrimSpace(string(out))
	t.Logf("this tree: %s", v)

	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Fatalf("needs dpkg: %v", err)
	}
	if out, err := exec.Command("dpkg", "--validate-version", v).CombinedOutput(); err != nil {
		t.Errorf("dpkg --validate-version %s: %v %s", v, err, out)
	}
	// Each sorts before the next.
	order := []string{"0.0.0~git20261201.abcdef1", "0.0.0~git20261202.1234567", "1.2.3~rc1", "1.2.3~rc1+4.gabcdef1", "1.2.3", "1.2.3+4.gabcdef1", "1.2.4"}
	for i := 0; i+1 < len(order); i++ {
		if err := exec.Command("dpkg", "--compare-versions", order[i], "lt", order[i+1]).Run(); err != nil {
			t.Errorf("dpkg: %s is not before %s", order[i], order[i+1])
		}
	}
}

// TestMaintainerScripts runs dist/deb/{postinst,prerm,postrm} as on a live system run by
// systemd, in a private mount namespace (unshare, root only): /run is a tmpfs holding
// /run/systemd/system (what the scripts take for "systemd runs"), /sys/fs/bpf a tmpfs, and /etc
// and /usr/sbin overlays whose writes go to a tmpfs, so nothing reaches the host. systemctl is a
// fake that logs its arguments; /usr/sbin/l2shim a fake that logs its own. It checks the
// scripts never enable or start l2shim, stop it and clean up on removal, purge the
// configuration, and never fail, even when systemctl and l2shim do.
func TestMaintainerScripts(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a mount namespace)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("needs unshare (util-linux): %v", err)
	}
	scripts, err := filepath.Abs("deb")
	if err != nil {
		t.Fatal(err)
	}
	// In the namespace: the mounts, the state before (PRE), the script, then which of the paths
	// the scripts may remove are left. $T is the test's directory, outside every mount.
	const wrapper = `set -eu
mount -t tmpfs tmpfs "$T/mnt"
mkdir -p "$T/mnt/etc/u" "$T/mnt/etc/w" "$T/mnt/sbin/u" "$T/mnt/sbin/w"
mount -t overlay overlay -o lowerdir=/etc,upperdir="$T/mnt/etc/u",workdir="$T/mnt/etc/w" /etc
mount -t overlay overlay -o lowerdir=/usr/sbin,upperdir="$T/mnt/sbin/u",workdir="$T/mnt/sbin/w" /usr/sbin
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /sys/fs/bpf
mkdir -p /run/systemd/system
printf '#!/bin/sh\necho "l2shim $*" >>"$T/calls"\nexit ${FAKE_L2SHIM_RC:-0}\n' >/usr/sbin/l2shim
chmod 755 /usr/sbin/l2shim
rm -f /usr/sbin/policy-rc.d
if [ -n "${FAKE_POLICY:-}" ]; then
	printf '#!/bin/sh\nexit %s\n' "$FAKE_POLICY" >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
fi
eval "$PRE"
set +e
PATH="$T/bin:$PATH" sh "$SCRIPTS/$1" "$2" ${3:+"$3"} >"$T/out" 2>&1
echo $? >"$T/rc"
set -e
for p in /etc/l2shim /etc/systemd/system/multi-user.target.wants/l2shim.service /sys/fs/bpf/l2shim; do
	if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi
done >"$T/left"
`
	// The fake systemctl (deb-systemd-invoke, the real one, calls it too): is-active answers
	// FAKE_ACTIVE (0 active, 3 inactive) until a stop succeeded, is-enabled "disabled",
	// anything else FAKE_RC. FAKE_POLICY is what /usr/sbin/policy-rc.d answers (none: no such
	// script; 101: "do not").
	const systemctl = `#!/bin/sh
echo "systemctl $*" >>"$T/calls"
case " $* " in
*" is-active "*) [ -e "$T/stopped" ] && exit 3; exit ${FAKE_ACTIVE:-3} ;;
*" is-enabled "*) echo disabled; exit 1 ;;
*" stop "*) [ "${FAKE_RC:-0}" = 0 ] && : >"$T/stopped" ;;
esac
exit ${FAKE_RC:-0}
`
	// deb-systemd-invoke restart: whether the unit is enabled and active, then the restart.
	restart := []string{"systemctl --system is-enabled -- l2shim.service", "systemctl --system --quiet is-active -- l2shim.service", "systemctl --quiet --system restart l2shim.service"}
	upgrade := []string{"systemctl daemon-reload", "systemctl is-active --quiet l2shim.service"}
	stopped := []string{"systemctl is-active --quiet l2shim.service", "systemctl stop l2shim.service", "systemctl is-active --quiet l2shim.service"}
	const installed = `mkdir -p /etc/l2shim /etc/systemd/system/multi-user.target.wants /sys/fs/bpf/l2shim
echo x >/etc/l2shim/l2shim.toml
ln -s /usr/lib/systemd/system/l2shim.service /etc/systemd/system/multi-user.target.wants/l2shim.service`
	cases := []struct {
		name  string
		args  []string // script and its arguments
		env   []string
		pre   string
		calls []string
		left  []string
		out   string // in the output
	}{
		{"first install", []string{"postinst", "configure", ""}, nil, "",
			[]string{"systemctl daemon-reload"}, nil, "systemctl enable --now l2shim"},
		{"upgrade, running", []string{"postinst", "configure", "1.0"}, []string{"FAKE_ACTIVE=0"}, "",
			append(upgrade, restart...), nil, ""},
		{"upgrade, stopped", []string{"postinst", "configure", "1.0"}, nil, "",
			upgrade, nil, ""},
		{"upgrade, restart fails", []string{"postinst", "configure", "1.0"}, []string{"FAKE_ACTIVE=0", "FAKE_RC=1"}, "",
			append(upgrade, restart...), nil, "the restart failed"},
		{"upgrade, running, policy-rc.d says no", []string{"postinst", "configure", "1.0"}, []string{"FAKE_ACTIVE=0", "FAKE_POLICY=101"}, "",
			upgrade, nil, ""},
		{"remove, running", []string{"prerm", "remove"}, []string{"FAKE_ACTIVE=0"}, installed,
			append(stopped, "l2shim cleanup"),
			[]string{"/etc/l2shim", "/etc/systemd/system/multi-user.target.wants/l2shim.service", "/sys/fs/bpf/l2shim"}, ""},
		{"remove, running, the cleanup fails", []string{"prerm", "remove"}, []string{"FAKE_ACTIVE=0", "FAKE_L2SHIM_RC=1"}, "",
			append(stopped, "l2shim cleanup"), nil, ""},
		// Still running after the stop: its hooks are left alone.
		{"remove, running, the stop fails", []string{"prerm", "remove"}, []string{"FAKE_ACTIVE=0", "FAKE_RC=1"}, "",
			stopped, nil, ""},
		{"remove, running, policy-rc.d says no", []string{"prerm", "remove"}, []string{"FAKE_ACTIVE=0", "FAKE_POLICY=101"}, "",
			[]string{"systemctl is-active --quiet l2shim.service", "systemctl is-active --quiet l2shim.service"}, nil, ""},
		{"remove, stopped", []string{"prerm", "remove"}, nil, "",
			[]string{"systemctl is-active --quiet l2shim.service"}, nil, ""},
		{"upgrade's prerm", []string{"prerm", "upgrade", "1.1"}, []string{"FAKE_ACTIVE=0"}, "", nil, nil, ""},
		{"postrm remove", []string{"postrm", "remove"}, nil, installed,
			[]string{"systemctl daemon-reload"},
			[]string{"/etc/l2shim", "/etc/systemd/system/multi-user.target.wants/l2shim.service", "/sys/fs/bpf/l2shim"}, ""},
		{"purge", []string{"postrm", "purge"}, []string{"FAKE_RC=1"}, installed,
			[]string{"systemctl daemon-reload"}, nil, ""},
		// Into another root ({T}/root): no systemctl, the host's /etc and pins untouched, the
		// root's /etc/l2shim purged.
		{"DPKG_ROOT", []string{"postinst", "configure", ""}, []string{"DPKG_ROOT={T}/root"}, "",
			nil, nil, "systemctl enable --now l2shim"},
		{"DPKG_ROOT prerm", []string{"prerm", "remove"}, []string{"DPKG_ROOT={T}/root", "FAKE_ACTIVE=0"}, installed, nil,
			[]string{"/etc/l2shim", "/etc/systemd/system/multi-user.target.wants/l2shim.service", "/sys/fs/bpf/l2shim"}, ""},
		{"DPKG_ROOT purge", []string{"postrm", "purge"}, []string{"DPKG_ROOT={T}/root"}, installed + "\nmkdir -p \"$T/root/etc/l2shim\"",
			nil, []string{"/etc/l2shim", "/etc/systemd/system/multi-user.target.wants/l2shim.service", "/sys/fs/bpf/l2shim"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Not t.TempDir: the subtest's name would put a comma into overlay's options.
			dir, err := os.MkdirTemp("", "l2shim-mscripts-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			for _, d := range []string{"mnt", "bin"} {
				if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "bin", "systemctl"), []byte(systemctl), 0o755); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", wrapper, "wrapper"}, c.args...)
			cmd := exec.Command("unshare", args...)
			cmd.Env = append(os.Environ(), "T="+dir, "SCRIPTS="+scripts, "PRE="+c.pre)
			for _, e := range c.env {
				cmd.Env = append(cmd.Env, strings.ReplaceAll(e, "{T}", dir))
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("unshare: %v\n%s", err, out)
			}
			out, _ := os.ReadFile(filepath.Join(dir, "out"))
			if rc := strings.TrimSpace(string(read(t, filepath.Join(dir, "rc")))); rc != "0" {
				t.Errorf("%s exited %s:\n%s", strings.Join(c.args, " "), rc, out)
			}
			var calls []string
			if b, err := os.ReadFile(filepath.Join(dir, "calls")); err == nil {
				calls = strings.Split(strings.TrimSpace(string(b)), "\n")
			}
			if !slices.Equal(calls, c.calls) {
				t.Errorf("calls:\n  %s\nwant\n  %s", strings.Join(calls, "\n  "), strings.Join(c.calls, "\n  "))
			}
			for _, call := range calls {
				if f := strings.Fields(call); slices.Contains(f, "enable") || slices.Contains(f, "start") {
					t.Errorf("%s: enables or starts l2shim", call)
				}
			}
			var left []string
			if b := strings.TrimSpace(string(read(t, filepath.Join(dir, "left")))); b != "" {
				left = strings.Split(b, "\n")
			}
			if !slices.Equal(left, c.left) {
				t.Errorf("left after the script: %v, want %v", left, c.left)
			}
			if _, err := os.Stat(filepath.Join(dir, "root/etc/l2shim")); err == nil {
				t.Error("DPKG_ROOT's /etc/l2shim is left after a purge")
			}
			if !strings.Contains(string(out), c.out) {
				t.Errorf("output %q, want %q in it", out, c.out)
			}
		})
	}
}
