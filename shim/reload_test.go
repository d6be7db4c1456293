package shim

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l2shim/l2shim/conf"
	"github.com/l2shim/l2shim/control"
	"github.com/l2shim/l2shim/internal/testcfg"
)

func parse(t *testing.T, text string) *conf.Config {
	t.Helper()
	c, err := conf.Parse("l2shim.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRestartOnly(t *testing.T) {
	base := testcfg.TwoGateways
	tests := []struct {
		name string
		shim string // [shim] keys of the new file
		ct   string // [conntrack] keys of the new file
		want []string
	}{
		{name: "nothing changed"},
		{name: "mode and source_aware reload", shim: "mode = \"failover\"\nsource_aware = false"},
		{name: "timeouts reload", ct: "tcp_established = \"3h\""},
		{name: "mark", shim: "mark = 0x20\nmark_mask = 0x30", want: []string{"shim.mark and shim.mark_mask"}},
		{name: "mark_mask alone", shim: "mark_mask = 0xff", want: []string{"shim.mark and shim.mark_mask"}},
		{name: "heartbeat", shim: "heartbeat = \"2s\"", want: []string{"shim.heartbeat"}},
		{name: "control", shim: "control = \"/run/other.sock\"", want: []string{"shim.control"}},
		{name: "metrics", shim: "metrics = \"127.0.0.1:9617\"", want: []string{"shim.metrics"}},
		{name: "max_flows", ct: "max_flows = 4096", want: []string{"conntrack.max_flows"}},
		{
			name: "several at once", shim: "heartbeat = \"3s\"\nmetrics = \"127.0.0.1:1\"", ct: "max_flows = 2048",
			want: []string{"shim.heartbeat", "shim.metrics", "conntrack.max_flows"},
		},
	}
	old := parse(t, base)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text := base
			if tc.shim != "" {
				text = "[shim]\n" + tc.shim + "\n\n" + text
			}
			if tc.ct != "" {
				text = "[conntrack]\n" + tc.ct + "\n\n" + text
			}
			err := restartOnly(old, parse(t, text))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want a refusal naming %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not name %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), "needs a restart") {
				t.Errorf("%q does not say a restart is needed", err)
			}
		})
	}
}

// TestHandlersBeforeRun: a reload (SIGHUP), a drain or a status request that reaches a shim
// whose Run has not finished starting is answered "starting", never a panic on the missing
// engine or view.
func TestHandlersBeforeRun(t *testing.T) {
	s := New(parse(t, testcfg.TwoGateways), Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if st := s.Status(); st != nil {
		t.Errorf("status before start: %+v, want nil", st)
	}
	calls := map[string]func() (string, error){
		"reload":  s.Reload,
		"drain":   func() (string, error) { return s.Drain("isp-b", true) },
		"undrain": func() (string, error) { return s.Undrain("isp-b") },
	}
	for name, call := range calls {
		msg, err := call()
		if !errors.Is(err, control.ErrStarting) {
			t.Errorf("%s before start: %q, %v; want control.ErrStarting", name, msg, err)
		}
	}
	select {
	case <-s.Ready():
		t.Error("Ready closed before Run")
	default:
	}

	// The same through the control socket: an answer, not a dropped connection.
	path := filepath.Join(t.TempDir(), "c.sock")
	srv, err := control.Listen(path, s, s.log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for _, req := range []control.Request{{Command: "status"}, {Command: "reload"}, {Command: "drain", Gateway: "isp-b"}} {
		_, err := control.Call(path, req, 2*time.Second)
		if err == nil || !strings.Contains(err.Error(), "starting") {
			t.Errorf("%s before start over the socket: %v, want an answer saying it is starting", req.Command, err)
		}
	}

	// Once stopping, the same requests are refused as such.
	s.setState(stateRunning)
	select {
	case <-s.Ready():
	default:
		t.Error("Ready not closed once running")
	}
	s.setState(stateStopping)
	if _, err := s.Drain("isp-b", false); !errors.Is(err, control.ErrStopping) {
		t.Errorf("drain while stopping: %v, want control.ErrStopping", err)
	}
	if _, err := s.Reload(); !errors.Is(err, control.ErrStopping) {
		t.Errorf("reload while stopping: %v, want control.ErrStopping", err)
	}
}
