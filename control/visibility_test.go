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

// visHandler answers every visibility request and records what it was asked.
type visHandler struct {
	fakeHandler
	gotFlows FlowQuery
	gotAfter uint64
	gotWait  time.Duration
	gotSecs  int
}

func (v *visHandler) Flows(q FlowQuery) (*FlowList, error) {
	v.gotFlows = q
	if q.State == "bad" {
		return nil, errors.New("flows: \"bad\" is not a state")
	}
	return &FlowList{Flows: []Flow{{Proto: "tcp", HostSrc: "10.1.0.2:40000", HostDst: "203.0.113.10:443", WireSrc: "10.2.0.2:40000", Gateway: "isp-b", Reason: "rule", Why: `rule "web": route-to isp-b`}}, Next: -1, Total: 1}, nil
}

func (v *visHandler) Explain(q ExplainQuery) (*Explanation, error) {
	return &Explanation{Summary: "A new " + q.Proto + " flow would leave through isp-b.", Steps: []string{"rule \"web\" matches"}, Gateway: "isp-b",
		Gateways: []ExplainGateway{{Name: "isp-a", State: "down", Reason: "drained"}, {Name: "isp-b", State: "up", Usable: true}}}, nil
}

func (v *visHandler) Events(after uint64, wait time.Duration) []Event {
	v.gotAfter, v.gotWait = after, wait
	ev := make([]Event, 300)
	for i := range ev {
		ev[i] = Event{Seq: uint64(i + 1), Kind: "gateway", Gateway: "isp-a", Message: "up → down"}
	}
	return ev
}

func (v *visHandler) History(seconds int) []Sample {
	v.gotSecs = seconds
	return []Sample{{Gateways: []SampleGateway{{Name: "isp-a", BytesIn: 1}}}}
}

// TestVisibilityRequests: each request reaches its handler with its bounds applied, and a
// handler without the optional methods refuses them.
func TestVisibilityRequests(t *testing.T) {
	serve := func(h Handler) string {
		path := filepath.Join(t.TempDir(), "l2shim.sock")
		srv, err := Listen(path, h, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { srv.Serve(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		return path
	}
	h := &visHandler{fakeHandler: fakeHandler{drained: map[string]bool{}}}
	path := serve(h)

	for _, tc := range []struct {
		name  string
		req   Request
		check func(r *Response) bool
		err   string
	}{
		{"flows, limit bounded", Request{Command: "flows", Flows: &FlowQuery{Limit: 5000, Port: 443}}, func(r *Response) bool {
			return h.gotFlows.Limit == MaxFlows && h.gotFlows.Port == 443 && len(r.Flows.Flows) == 1 && r.Flows.Next == -1
		}, ""},
		{"flows without a query", Request{Command: "flows"}, func(r *Response) bool { return h.gotFlows.Limit == MaxFlows }, ""},
		{"flows refused", Request{Command: "flows", Flows: &FlowQuery{State: "bad"}}, nil, "not a state"},
		{"explain", Request{Command: "explain", Explain: &ExplainQuery{Proto: "tcp"}}, func(r *Response) bool { return r.Explain.Gateway == "isp-b" }, ""},
		{"explain without a flow", Request{Command: "explain"}, nil, "no flow to explain"},
		{"events: at most MaxEvents, wait bounded", Request{Command: "events", After: 7, Wait: 3600}, func(r *Response) bool {
			return len(r.Events) == MaxEvents && r.Events[0].Seq == 101 && h.gotAfter == 7 && h.gotWait == MaxWait
		}, ""},
		{"history bounded", Request{Command: "history", Seconds: 100000}, func(r *Response) bool { return h.gotSecs == MaxHistory && len(r.History) == 1 }, ""},
		{"history default", Request{Command: "history"}, func(r *Response) bool { return h.gotSecs == MaxHistory }, ""},
	} {
		resp, err := Call(path, tc.req, 2*time.Second)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.check(resp):
			t.Errorf("%s: %+v", tc.name, resp)
		}
	}

	// A handler that has none of them.
	plain := serve(&fakeHandler{drained: map[string]bool{}})
	for _, cmd := range []string{"flows", "events", "history", "explain"} {
		if _, err := Call(plain, Request{Command: cmd, Explain: &ExplainQuery{}}, time.Second); err == nil {
			t.Errorf("%s accepted by a handler without it", cmd)
		}
	}
}

// TestVisibilityText: the tables for a person.
func TestVisibilityText(t *testing.T) {
	var b bytes.Buffer
	h := &visHandler{}
	fl, _ := h.Flows(FlowQuery{})
	fl.Flows = append(fl.Flows, Flow{Proto: "udp", HostSrc: "10.1.0.2:53", HostDst: "192.0.2.1:53", WireSrc: "10.1.0.2:53", Why: "pinned", Age: 125, Idle: 3.5})
	if err := WriteFlows(&b, fl.Flows); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"HOST SRC", "10.2.0.2:40000", `rule "web": route-to isp-b`, "(host)", "2m5s", "3.5s"} {
		if !strings.Contains(out, want) {
			t.Errorf("flows table lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(strings.Split(out, "\n")[2], "  =  ") {
		t.Errorf("an un-NATed flow's wire source is not shown as '=':\n%s", out)
	}
	b.Reset()
	x, _ := h.Explain(ExplainQuery{Proto: "tcp"})
	if err := WriteExplanation(&b, x); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"A new tcp flow", ` 1. rule "web" matches`, "isp-a    down   no         drained", "changes nothing"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("explanation lacks %q:\n%s", want, b.String())
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	if got := EventLine(Event{Time: at, Kind: "drain", Gateway: "isp-a", Message: "drained"}); got != "2026-01-02 03:04:05  drain isp-a: drained" {
		t.Errorf("EventLine = %q", got)
	}
	for s, want := range map[float64]string{0.25: "0.2s", 42: "42s", 125: "2m5s", 7500: "2h5m", 3 * 86400: "3d0h"} {
		if got := Seconds(s); got != want {
			t.Errorf("Seconds(%v) = %q, want %q", s, got, want)
		}
	}
	// The status prints its recent events.
	b.Reset()
	st := &Status{Events: []Event{{Time: at, Kind: "reload", Message: "reloaded"}}, Affinity: "host-pair"}
	if err := WriteTable(&b, st, at); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "recent events") || !strings.Contains(b.String(), "reload: reloaded") || !strings.Contains(b.String(), "affinity host-pair") {
		t.Errorf("status table:\n%s", b.String())
	}
}
