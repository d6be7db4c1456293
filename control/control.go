package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Request is what a client sends.
type Request struct {
	Command string `json:"command"`           // "status", "reload", "drain", "undrain", "flows", "explain", "events", "history"
	Gateway string `json:"gateway,omitempty"` // drain/undrain: a gateway's name
	Reset   bool   `json:"reset,omitempty"`   // drain: also reset its TCP flows
	// Flows selects the flows of "flows"; Explain is the flow "explain" decides.
	Flows   *FlowQuery    `json:"flows,omitempty"`
	Explain *ExplainQuery `json:"explain,omitempty"`
	// After and Wait: "events" returns the events after sequence number After, waiting up to
	// Wait seconds (at most MaxWait) for one.
	After uint64  `json:"after,omitempty"`
	Wait  float64 `json:"wait,omitempty"`
	// Seconds: "history" returns the samples of the last Seconds seconds (at most
	// MaxHistory).
	Seconds int `json:"seconds,omitempty"`
}

// Response is what the server answers.
type Response struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
	// Message says what a command did, for the operator.
	Message string `json:"message,omitempty"`
	// The answers of "flows", "explain", "events" and "history".
	Flows   *FlowList    `json:"flows,omitempty"`
	Explain *Explanation `json:"explain,omitempty"`
	Events  []Event      `json:"events,omitempty"`
	History []Sample     `json:"history,omitempty"`
}

// Handler carries out requests. Status returns nil while there is no status to give yet
// (the instance is starting).
type Handler interface {
	Status() *Status
	Reload() (string, error)
	Drain(gateway string, reset bool) (string, error)
	Undrain(gateway string) (string, error)
}

// Server serves a Handler on a Unix socket.
type Server struct {
	path string
	ln   *net.UnixListener
	h    Handler
	log  *slog.Logger
}

// ErrInUse is returned by Listen when another live instance answers on the socket.
var ErrInUse = errors.New("another l2shim is running on this control socket")

// ErrStarting and ErrStopping are what a request gets while the instance is not running yet
// (it is still attaching) or any more.
var (
	ErrStarting = errors.New("l2shim is starting: try again once it runs")
	ErrStopping = errors.New("l2shim is stopping")
)

// MaxRequest bounds the size of a request in bytes; a real one is well under 1 KiB. A larger
// one is refused without being read to its end.
const MaxRequest = 64 << 10

// Listen creates the control socket at path (mode 0660). A stale socket file left by a killed
// instance is replaced; one a live instance answers on is not.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", path, ErrInUse)
	}
	_ = os.Remove(path)
	// The socket gets mode 0660 from the moment it exists: no window where others could
	// connect. The umask is process-wide, so it is restored at once.
	ln, err := listenUnix(path)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod control socket: %w", err)
	}
	return &Server{path: path, ln: ln, h: h, log: log}, nil
}

// Serve answers requests until ctx is done, then removes the socket.
func (s *Server) Serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		s.ln.Close()
	}()
	defer os.Remove(s.path)
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("control socket accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go s.serveConn(c)
	}
}

func (s *Server) serveConn(c *net.UnixConn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10*time.Second + MaxWait))
	var req Request
	lr := &io.LimitedReader{R: c, N: MaxRequest + 1}
	if err := json.NewDecoder(lr).Decode(&req); err != nil {
		msg := "bad request: " + err.Error()
		if lr.N <= 0 {
			msg = fmt.Sprintf("bad request: larger than %d bytes", MaxRequest)
		}
		_ = json.NewEncoder(c).Encode(Response{Error: msg})
		return
	}
	_ = json.NewEncoder(c).Encode(s.handle(req))
}

func (s *Server) handle(req Request) Response {
	var msg string
	var err error
	switch req.Command {
	case "status":
		st := s.h.Status()
		if st == nil {
			return Response{Error: ErrStarting.Error()}
		}
		return Response{OK: true, Status: st}
	case "reload":
		msg, err = s.h.Reload()
	case "drain":
		msg, err = s.h.Drain(req.Gateway, req.Reset)
	case "undrain":
		msg, err = s.h.Undrain(req.Gateway)
	default:
		if resp, ok := s.handleVisibility(req); ok {
			return resp
		}
		return Response{Error: fmt.Sprintf("unknown command %q", req.Command)}
	}
	if err != nil {
		return Response{Error: err.Error()}
	}
	return Response{OK: true, Message: msg}
}

// Call sends req to the instance on the socket at path and returns its response.
func Call(path string, req Request, timeout time.Duration) (*Response, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("connect to l2shim at %s (is it running?): %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, fmt.Errorf("send to %s: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("read answer from %s: %w", path, err)
	}
	if !resp.OK {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}
