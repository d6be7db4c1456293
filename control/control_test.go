package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
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

// startingHandler is an instance that has no status yet.
type startingHandler struct{ *fakeHandler }

func (startingHandler) Status() *Status { return nil }

// serve runs a server for h on a new socket until the test ends.
func serve(t *testing.T, h Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "l2shim.sock")
	srv, err := Listen(path, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

func TestStatusWhileStarting(t *testing.T) {
	path := serve(t, startingHandler{&fakeHandler{}})
	_, err := Call(path, Request{Command: "status"}, time.Second)
	if err == nil || err.Error() != ErrStarting.Error() {
		t.Fatalf("status of an instance without one: %v, want %q", err, ErrStarting)
	}
}

// TestRequestSize: a request larger than MaxRequest is refused as such, without reading it to
// its end; one just under the bound is served.
func TestRequestSize(t *testing.T) {
	h := &fakeHandler{drained: map[string]bool{}}
	path := serve(t, h)
	ask := func(body []byte) (Response, error) {
		c, err := net.Dial("unix", path)
		if err != nil {
			return Response{}, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		// The client writes what it can and reads the answer; a server that stops reading
		// early leaves the rest unwritten, which is fine.
		go func() { _, _ = c.Write(body) }()
		var resp Response
		err = json.NewDecoder(c).Decode(&resp)
		return resp, err
	}
	pad := func(n int) []byte {
		return []byte(`{"command":"drain","gateway":"isp-a","reset":false,"x":"` + strings.Repeat("a", n) + `"}`)
	}
	small := pad(MaxRequest - 200)
	resp, err := ask(small)
	if err != nil || !resp.OK {
		t.Fatalf("a %d-byte request: %+v, %v; want it served", len(small), resp, err)
	}
	for _, size := range []int{MaxRequest + 1, 16 << 20} {
		resp, err := ask(pad(size))
		if err != nil {
			t.Fatalf("a %d-byte request: no answer: %v", size, err)
		}
		if resp.OK || !strings.Contains(resp.Error, "larger than") {
			t.Errorf("a %d-byte request: %+v; want it refused as too large", size, resp)
		}
	}
	// Endless whitespace is no way around the bound either.
	resp, err = ask(bytes.Repeat([]byte(" "), 1<<20))
	if err != nil || resp.OK || !strings.Contains(resp.Error, "larger than") {
		t.Errorf("1 MiB of spaces: %+v, %v; want it refused as too large", resp, err)
	}
}
