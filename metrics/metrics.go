package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/l2shim/l2shim/control"
)

// Source gives the current status.
type Source interface{ Status() *control.Status }

// Exporter serves the metrics.
type Exporter struct {
	reg *prometheus.Registry
	rtt *prometheus.HistogramVec
	src Source
}

var (
	descUp         = prometheus.NewDesc("l2shim_gateway_up", "1 when the gateway takes new flows of the address family (state up or degraded), 0 when down; family=\"ipv6\" only for a gateway whose uplink has IPv6.", []string{"gateway", "interface", "family"}, nil)
	descState      = prometheus.NewDesc("l2shim_gateway_state", "The gateway's state: 1 for the current one of up, degraded, down.", []string{"gateway", "state"}, nil)
	descDrained    = prometheus.NewDesc("l2shim_gateway_drained", "1 while the gateway is drained by `l2shim drain`.", []string{"gateway"}, nil)
	descFlows      = prometheus.NewDesc("l2shim_gateway_flows", "Flows placed on the gateway that are in the flow table now.", []string{"gateway"}, nil)
	descPlaced     = prometheus.NewDesc("l2shim_gateway_flows_placed_total", "Flows placed on the gateway since start.", []string{"gateway"}, nil)
	descBytes      = prometheus.NewDesc("l2shim_gateway_bytes_total", "Bytes of the gateway's flows, by direction (out: host to wire).", []string{"gateway", "direction"}, nil)
	descPackets    = prometheus.NewDesc("l2shim_gateway_packets_total", "Frames of the gateway's flows, by direction.", []string{"gateway", "direction"}, nil)
	descAttempts   = prometheus.NewDesc("l2shim_gateway_attempts", "Connection attempts through the gateway in the failover window.", []string{"gateway"}, nil)
	descFailures   = prometheus.NewDesc("l2shim_gateway_failures", "Counted failed connection attempts in the failover window.", []string{"gateway"}, nil)
	descRuleFlows  = prometheus.NewDesc("l2shim_rule_flows_total", "Flows a rule matched.", []string{"rule", "action"}, nil)
	descRulePkts   = prometheus.NewDesc("l2shim_rule_packets_total", "Frames of flows a rule matched.", []string{"rule", "action"}, nil)
	descRuleBytes  = prometheus.NewDesc("l2shim_rule_bytes_total", "Bytes of flows a rule matched.", []string{"rule", "action"}, nil)
	descDrops      = prometheus.NewDesc("l2shim_drops_total", "Frames the datapath dropped, by reason.", []string{"reason"}, nil)
	descDatapath   = prometheus.NewDesc("l2shim_datapath_total", "Datapath event counters (frames_out, nated, rotations, ...).", []string{"counter"}, nil)
	descCTFlows    = prometheus.NewDesc("l2shim_conntrack_flows", "Flows in the flow table.", nil, nil)
	descCTMax      = prometheus.NewDesc("l2shim_conntrack_max_flows", "The flow table's bound (max_flows).", nil, nil)
	descCTEvicted  = prometheus.NewDesc("l2shim_conntrack_evictions_total", "Flows evicted to make room for new ones.", nil, nil)
	descCTExpired  = prometheus.NewDesc("l2shim_conntrack_expired_total", "Flows removed after their idle timeout.", nil, nil)
	descReloads    = prometheus.NewDesc("l2shim_reloads_total", "Configuration reloads applied.", nil, nil)
	descStartedSec = prometheus.NewDesc("l2shim_start_time_seconds", "When this instance started (Unix time).", nil, nil)
)

// New returns an exporter reading src.
func New(src Source) *Exporter {
	e := &Exporter{
		reg: prometheus.NewRegistry(),
		src: src,
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "l2shim_probe_rtt_seconds",
			Help:    "Round-trip time of ICMP (family ipv4) and ICMPv6 (family ipv6) probes through each gateway.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1},
		}, []string{"gateway", "family"}),
	}
	e.reg.MustRegister(e.rtt, collector{e})
	return e
}

// ObserveRTT records one probe reply's round-trip time through gateway, for family "ipv4" or
// "ipv6".
func (e *Exporter) ObserveRTT(gateway, family string, d time.Duration) {
	e.rtt.WithLabelValues(gateway, family).Observe(d.Seconds())
}

// Handler returns the HTTP handler serving /metrics.
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{})
}

// Serve listens on addr and serves /metrics, and the status page at / when the source keeps
// events and history (PageSource), until ctx is done.
func (e *Exporter) Serve(ctx context.Context, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", e.Handler())
	if ps, ok := e.src.(PageSource); ok {
		mux.Handle("/", pageHandler(ps))
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return nil
}

type collector struct{ e *Exporter }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descState, descDrained, descFlows, descPlaced, descBytes, descPackets,
		descAttempts, descFailures, descRuleFlows, descRulePkts, descRuleBytes, descDrops, descDatapath,
		descCTFlows, descCTMax, descCTEvicted, descCTExpired, descReloads, descStartedSec} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.src.Status()
	if s == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	for _, g := range s.Gateways {
		gauge(descUp, b2f(g.State != "down"), g.Name, g.Interface, "ipv4")
		if g.State6 != "" {
			gauge(descUp, b2f(g.State6 != "down"), g.Name, g.Interface, "ipv6")
		}
		for _, st := range []string{"up", "degraded", "down"} {
			gauge(descState, b2f(g.State == st), g.Name, st)
		}
		gauge(descDrained, b2f(g.Drained), g.Name)
		gauge(descFlows, float64(g.Flows), g.Name)
		counter(descPlaced, g.Placed, g.Name)
		counter(descBytes, g.BytesOut, g.Name, "out")
		counter(descBytes, g.BytesIn, g.Name, "in")
		counter(descPackets, g.PacketsOut, g.Name, "out")
		counter(descPackets, g.PacketsIn, g.Name, "in")
		gauge(descAttempts, float64(g.Active), g.Name)
		gauge(descFailures, float64(g.Failed), g.Name)
	}
	for _, r := range s.Rules {
		counter(descRuleFlows, r.Flows, r.Name, r.Action)
		counter(descRulePkts, r.Packets, r.Name, r.Action)
		counter(descRuleBytes, r.Bytes, r.Name, r.Action)
	}
	for k, v := range s.Drops {
		counter(descDrops, v, k)
	}
	for k, v := range s.Datapath {
		counter(descDatapath, v, k)
	}
	gauge(descCTFlows, float64(s.Conntrack.Flows))
	gauge(descCTMax, float64(s.Conntrack.Max))
	counter(descCTEvicted, s.Conntrack.Evictions)
	counter(descCTExpired, s.Conntrack.Expired)
	counter(descReloads, s.Reloads)
	gauge(descStartedSec, float64(s.Started.Unix()))
}
