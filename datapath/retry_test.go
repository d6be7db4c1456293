package datapath

import (
	"testing"
	"time"

	"github.com/l2shim/l2shim/failover"
)

// TestRetryFromNewSocket follows a resolver whose queries through gw0 go unanswered (gw0's
// upstream died silently) and which retries each from a new source port after a second, as dig
// does: the retry goes through gw1 and is answered there, the unanswered first try counts as
// gw0's failure, and after four such queries gw0 is benched.
func TestRetryFromNewSocket(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	reconfigure(t, d, func(p *Plan) {
		p.Config.Health = failover.HealthConfig{Window: time.Minute, FailRatio: 0.5, MinAttempts: 4}
	})
	sec := int64(time.Second)
	now := int64(0)
	benched := false
	for q := 0; q < 4; q++ {
		first := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: uint16(30000 + 2*q), dport: 53, payload: []byte{byte(q), 1}}
		if v := processAt(d, 0, first.build(t), now); v.Iface != 0 {
			t.Fatalf("query %d: first try via %d, want gw0 (failover order)", q, v.Iface)
		}
		now += sec
		retry := first
		retry.sport++
		if v := processAt(d, 0, retry.build(t), now); v.To != ToWire || v.Iface != 1 {
			t.Fatalf("query %d: retry from a new port via %d, want gw1", q, v.Iface)
		}
		answer := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 53, dport: retry.sport}
		if v := processAt(d, 1, answer.build(t), now+int64(20e6)); v.To != ToHost {
			t.Fatalf("query %d: answer %+v", q, v)
		}
		now += sec / 10
		trans, _, _ := d.HealthTick(now)
		for _, tr := range trans {
			if tr.Gateway == 0 && tr.Benched {
				benched = true
			}
		}
	}
	st := d.Snapshot(now).Gateways[0].Inputs.Health
	if !benched || st.Failures < 2 {
		t.Fatalf("gw0 not benched after 4 unanswered first tries: %+v", st)
	}
	// Benched, gw0 gets no first tries any more.
	q := pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 31000, dport: 53}
	if v := processAt(d, 0, q.build(t), now); v.Iface != 1 {
		t.Fatalf("after the bench a new query went via %d", v.Iface)
	}
}

// TestParallelConnectionsAreNotRetries: connections opened together to the same service (a
// browser's parallel connections) keep the normal placement; only one opened a while after an
// unanswered one moves.
func TestParallelConnectionsAreNotRetries(t *testing.T) {
	d := testDatapath(t, failover.Failover, 1, 1)
	for i, at := range []int64{0, 50e6, 100e6} {
		s := syn(uint16(32000 + i))
		s.dport = 443
		if v := processAt(d, 0, s.build(t), at); v.Iface != 0 {
			t.Fatalf("parallel connection %d moved to %d", i, v.Iface)
		}
	}
	s := syn(32010)
	s.dport = 443
	if v := processAt(d, 0, s.build(t), int64(time.Second)); v.Iface != 1 {
		t.Fatalf("a connection a second after unanswered ones stayed on %d", v.Iface)
	}
}
