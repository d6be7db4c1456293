package control

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeHandler struct {
	drained map[string]bool
	reloads int
}

func (f *fakeHandler) Status() *Status {
	return &Status{Mode: "load-balance", Gateways: []GatewayStatus{{Name: "isp-a", Interface: "eth0", State: "up", Drained: f.drained["isp-a"], BytesOut: 3 << 20}}}
}
func (f *fakeHandler) Reload() (string, error) { f.reloads++; return "reloaded", nil }
func (f *fakeHandler) Drain(g string, reset bool) (string, error) {
	if g != "isp-a" {
		return "", errors.New("no gateway " + g)
	}
	f.drained[g] = true
	return "drained", nil
}
func (f *fakeHandler) Undrain(g string) (string, error) {
	f.drained[g] = false
	return "undrained", nil
}

func TestServerRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l2shim.sock")
	h := &fakeHandler{drained: map[string]bool{}}
	srv, err := Listen(path, h, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o660 {
		t.Fatalf("socket mode %o, want 0660", perm)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	if _, err := Listen(path, h, nil); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen on a live socket: %v, want ErrInUse", err)
	}
	if _, err := Call(path, Request{Command: "drain", Gateway: "isp-a"}, time.Second); err != nil {
		t.Fatal(err)
	}
	resp, err := Call(path, Request{Command: "status"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Status.Gateways[0].Drained {
		t.Fatal("status does not show the drain")
	}
	if _, err := Call(path, Request{Command: "drain", Gateway: "nope"}, time.Second); err == nil || !strings.Contains(err.Error(), "no gateway nope") {
		t.Fatalf("drain of an unknown gateway: %v", err)
	}
	if _, err := Call(path, Request{Command: "bogus"}, time.Second); err == nil {
		t.Fatal("unknown command accepted")
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, resp.Status, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "up,drained") || !strings.Contains(buf.String(), "3.0MiB") {
		t.Fatalf("table:\n%s", buf.String())
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l2shim.sock")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := Listen(path, &fakeHandler{}, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	srv.ln.Close()
}
