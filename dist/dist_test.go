package dist

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/integration"
)

const example = "l2shim.toml"

// TestExampleLoads loads the example exactly as l2shim would.
func TestExampleLoads(t *testing.T) {
	cfg, err := conf.Load(example)
	if err != nil {
		t.Fatalf("conf.Load(%s):\n%v", example, err)
	}
	if got := cfg.Interfaces(); !reflect.DeepEqual(got, []string{"eth0", "eth1"}) {
		t.Errorf("interfaces = %v, want [eth0 eth1]", got)
	}
	if len(cfg.Rules) != 0 {
		t.Errorf("the example has %d active rules; its rule is meant to stay commented out", len(cfg.Rules))
	}
}

// TestExampleActiveValuesAreDefaults checks that [shim], [failover] and [conntrack] as the
// example leaves them are exactly the defaults: anything the file sets there differs from
// nothing, and a reader may take the file as "the defaults, plus two gateways".
func TestExampleActiveValuesAreDefaults(t *testing.T) {
	cfg, err := conf.Load(example)
	if err != nil {
		t.Fatal(err)
	}
	def := defaults(t)
	if cfg.Shim != def.Shim {
		t.Errorf("[shim] as loaded = %+v, want the defaults %+v", cfg.Shim, def.Shim)
	}
	if cfg.Failover != def.Failover {
		t.Errorf("[failover] as loaded = %+v, want the defaults %+v", cfg.Failover, def.Failover)
	}
	if cfg.Conntrack != def.Conntrack {
		t.Errorf("[conntrack] as loaded = %+v, want the defaults %+v", cfg.Conntrack, def.Conntrack)
	}
	for _, g := range cfg.Gateways {
		if g.Weight != conf.DefaultWeight || !g.On || g.Onlink || g.MAC != nil || len(g.Probe) > 0 || g.MTU != 0 {
			t.Errorf("gateway %s sets a key away from its default; only name, interface, address and comment are meant to be active: %+v", g.Name, g)
		}
	}
}

// TestExampleCommentedLinesAreValid uncomments every "# key = value" line (and commented table
// headers) and loads the result: each commented line must be valid as it stands, and in
// [shim], [failover] and [conntrack] it must show the default (metrics has none: it is off).
func TestExampleCommentedLinesAreValid(t *testing.T) {
	data := uncommented(t)
	cfg, err := conf.Parse(example+" (uncommented)", data)
	if err != nil {
		t.Fatalf("the example with its commented keys uncommented does not load:\n%v\n--- uncommented file:\n%s", err, data)
	}
	def := defaults(t)
	got := cfg.Shim
	if got.Metrics == "" {
		t.Errorf("shim.metrics: the example should show an endpoint")
	}
	got.Metrics = def.Shim.Metrics
	if got != def.Shim {
		t.Errorf("[shim] commented values = %+v, want the defaults %+v", got, def.Shim)
	}
	if cfg.Failover != def.Failover {
		t.Errorf("[failover] commented values = %+v, want the defaults %+v", cfg.Failover, def.Failover)
	}
	if cfg.Conntrack != def.Conntrack {
		t.Errorf("[conntrack] commented values = %+v, want the defaults %+v", cfg.Conntrack, def.Conntrack)
	}
	g := cfg.Gateways[0]
	if g.Weight != conf.DefaultWeight || !g.On || g.Onlink {
		t.Errorf("gateway %s: commented weight/on/onlink = %d/%v/%v, want the defaults %d/true/false", g.Name, g.Weight, g.On, g.Onlink, conf.DefaultWeight)
	}
	if len(cfg.Rules) != 1 {
		t.Errorf("uncommented, the example has %d rules, want 1", len(cfg.Rules))
	}
}

// TestExampleNamesEveryKey checks that every key the conf package knows appears in the
// example, active or commented, and on a line of its own. The keys conf knows come from
// conf/testdata/full.toml (every key set) and from conf itself: an unknown key in a table
// makes it list the keys it knows.
func TestExampleNamesEveryKey(t *testing.T) {
	known := map[string]bool{}
	var full map[string]any
	if _, err := toml.DecodeFile(filepath.Join("..", "conf", "testdata", "full.toml"), &full); err != nil {
		t.Fatalf("read conf's full.toml: %v", err)
	}
	for _, k := range keyPaths("", full) {
		known[k] = true
	}
	fromConf := knownToConf(t)
	if len(fromConf) == 0 {
		t.Log("conf's unknown-key message lists no known keys any more; relying on full.toml alone")
	}
	for _, k := range fromConf {
		known[k] = true
	}

	var ex map[string]any
	if _, err := toml.Decode(string(uncommented(t)), &ex); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, k := range keyPaths("", ex) {
		have[k] = true
	}
	var missing []string
	for k := range known {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("keys conf knows that %s does not show (add a line for each, commented when it is a default): %s", example, strings.Join(missing, ", "))
	}
	t.Logf("%d keys checked", len(known))

	// One key a line: no line may hold two assignments (a comment may mention "key = value").
	two := regexp.MustCompile(`^#?\s*[a-z_]+\s*=\s*("[^"]*"|\[[^]]*\]|[^\s#]+)\s+[a-z_]+\s*=`)
	for i, line := range strings.Split(string(read(t, example)), "\n") {
		if two.MatchString(line) {
			t.Errorf("%s:%d: two keys on one line: %s", example, i+1, line)
		}
	}
}

// TestUnit checks the systemd unit against the command line and the example.
func TestUnit(t *testing.T) {
	unit := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(string(read(t, "l2shim.service"))))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("l2shim.service: not a key=value line: %q", line)
			continue
		}
		unit[k] = append(unit[k], v)
	}
	// The pins: /sys/fs/bpf/l2shim (the binary's default, which `make uninstall` and the
	// package's prerm clean up) made the service user's as root, bound into the sandbox where
	// check and run are told to look, and cleaned up when the unit stops while disabled.
	const pins, bound = "/sys/fs/bpf/l2shim", "/run/l2shim/pins"
	preparePins := `-+/bin/sh -c 'install -d -m 0700 ` + pins + ` && chown -R "$$(stat -c %%u:%%g /run/l2shim)" ` + pins + `'`
	if got := unit["ExecStartPre"]; len(got) != 2 || got[0] != preparePins || got[1] != "/usr/local/sbin/l2shim check -c /etc/l2shim/l2shim.toml --pin-dir "+bound {
		t.Errorf("l2shim.service: ExecStartPre=%q, want the pin directory prepared, then check", got)
	}
	// The integration tests and the bench run l2shim with these capabilities too.
	caps := strings.Join(integration.UnitCapabilities(), " ")
	want := map[string]string{
		"Type":                    "simple",
		"ExecStart":               "/usr/local/sbin/l2shim run -c /etc/l2shim/l2shim.toml --pin-dir " + bound,
		"BindPaths":               "-" + pins + ":" + bound,
		"ExecStopPost":            `+/bin/sh -c 'systemctl is-enabled --quiet l2shim.service || exec /usr/local/sbin/l2shim cleanup --pin-dir ` + pins + `'`,
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"Restart":                 "on-failure",
		"RuntimeDirectory":        "l2shim",
		"CapabilityBoundingSet":   caps,
		"AmbientCapabilities":     caps,
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"RestrictAddressFamilies": "AF_UNIX AF_NETLINK AF_PACKET AF_INET AF_INET6",
	}
	for k, v := range want {
		if got := unit[k]; len(got) != 1 || got[0] != v {
			t.Errorf("l2shim.service: %s=%v, want %s", k, got, v)
		}
	}
	// Settings that would break l2shim (see the unit's comments).
	for _, k := range []string{"ProtectKernelTunables", "ProcSubset", "PrivateNetwork", "PrivateUsers"} {
		if _, set := unit[k]; set {
			t.Errorf("l2shim.service sets %s, which breaks l2shim", k)
		}
	}
	if u := unit["User"]; len(u) > 0 && (u[0] == "root" || u[0] == "0") {
		t.Error("l2shim.service runs l2shim as root; it needs only its three capabilities")
	}
	// The control socket's default lives in the RuntimeDirectory.
	if dir := filepath.Dir(conf.DefaultControl); dir != "/run/l2shim" {
		t.Errorf("conf.DefaultControl is %s, outside RuntimeDirectory=l2shim (/run/l2shim): update the unit", conf.DefaultControl)
	}
	// The -c path is the binary's default and where make install puts the example.
	if cfg, err := conf.Load(example); err == nil && cfg.Shim.Control != conf.DefaultControl {
		t.Errorf("the example's control socket %s differs from the default", cfg.Shim.Control)
	}
}

// TestCapabilities runs captest.sh (root only): l2shim must run with exactly the unit's three
// capabilities as an unprivileged user, and fail without each of them.
func TestCapabilities(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "setpriv", "ping", "curl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s (.ci/run installs it): %v", tool, err)
		}
	}
	// A directory uid 65534 can enter: t.TempDir's parents are private to root.
	dir, err := os.MkdirTemp("", "l2shim-captest-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "l2shim")
	build := exec.Command("go", "build", "-o", bin, "./cmd/l2shim")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command("sh", "./captest.sh", "-m", "-b", bin)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("captest.sh: %v", err)
	}
	if !strings.Contains(string(out), "PASS: net_admin,net_raw,bpf is sufficient and each one is necessary") {
		t.Fatal("captest.sh did not report PASS")
	}
}

// defaults is the configuration of a file with only the example's gateways.
func defaults(t *testing.T) *conf.Config {
	t.Helper()
	cfg, err := conf.Parse("defaults", []byte(`
[[gateway]]
name = "isp-a"
interface = "eth0"
address = "192.168.1.1"
[[gateway]]
name = "isp-b"
interface = "eth1"
address = "192.168.2.1"
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// commented matches a commented-out key or table header: "# key = ..." or "# [[rule]]".
var commented = regexp.MustCompile(`^#\s?(\[\[?[a-z_]+\]\]?\s*(#.*)?|[a-z_][a-z0-9_]*\s*=.*)$`)

// uncommented returns the example with every commented key and table header uncommented.
func uncommented(t *testing.T) []byte {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(string(read(t, example)), "\n") {
		if m := commented.FindStringSubmatch(line); m != nil {
			line = m[1]
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// keyPaths returns the dotted paths of every key in a decoded TOML document: "shim.mode",
// "gateway.address" (arrays of tables are flattened), and the tables themselves ("shim").
func keyPaths(prefix string, m map[string]any) []string {
	var out []string
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		out = append(out, p)
		switch v := v.(type) {
		case map[string]any:
			out = append(out, keyPaths(p, v)...)
		case []map[string]any:
			for _, e := range v {
				out = append(out, keyPaths(p, e)...)
			}
		}
	}
	return out
}

// knownToConf asks conf which keys each table knows, by giving it an unknown key there and
// reading the "(known: a, b, c)" list of its message. It returns dotted paths, or nothing if
// the message no longer carries the list.
func knownToConf(t *testing.T) []string {
	t.Helper()
	const bogus = "zz_no_such_key_zz = 1\n"
	gateways := "[[gateway]]\nname = \"isp-a\"\ninterface = \"eth0\"\naddress = \"192.168.1.1\"\n"
	probes := []struct {
		table string // "" for the top level
		file  string
	}{
		{"", bogus + gateways},
		{"shim", "[shim]\n" + bogus + gateways},
		{"failover", "[failover]\n" + bogus + gateways},
		{"conntrack", "[conntrack]\n" + bogus + gateways},
		{"gateway", gateways + bogus},
		{"rule", gateways + "[[rule]]\naction = \"drop\"\n" + bogus},
	}
	list := regexp.MustCompile(`\(known: ([^)]*)\)`)
	var out []string
	for _, p := range probes {
		_, err := conf.Parse("probe", []byte(p.file))
		var es conf.Errors
		if !errors.As(err, &es) {
			t.Errorf("conf accepted an unknown key in %q", p.table)
			continue
		}
		for _, e := range es {
			m := list.FindStringSubmatch(e.Msg)
			if m == nil {
				continue
			}
			for _, k := range strings.Split(m[1], ", ") {
				if p.table != "" {
					k = p.table + "." + k
				}
				out = append(out, k)
			}
		}
	}
	return out
}
