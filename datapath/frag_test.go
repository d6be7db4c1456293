package datapath

import (
	"testing"

	"github.com/l2shim/l2shim/failover"
)

// TestFragmentEntryEndsWithLastFragment: once the last fragment of a datagram has passed, its
// entry is gone, so a busy tunnel does not keep the table full for fragTimeout.
func TestFragmentEntryEndsWithLastFragment(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	for id := uint16(1); id <= 50; id++ {
		f1, f2 := fragments(t, pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7500, dport: 5000}, id)
		if v := process(d, 0, f1); v.To != ToWire || v.Iface != 1 {
			t.Fatalf("first fragment %d: %+v", id, v)
		}
		if v := process(d, 0, f2); v.To != ToWire || v.Iface != 1 {
			t.Fatalf("last fragment %d did not follow its first: %+v", id, v)
		}
	}
	if n := len(d.frags.entries); n != 0 {
		t.Fatalf("%d fragment entries left after every datagram was complete, want 0", n)
	}
}

// TestFragmentBudgets: first fragments from one wire source fill only that source's share;
// another source, and the host's own datagrams, still have their fragments followed.
func TestFragmentBudgets(t *testing.T) {
	d := testDatapath(t, failover.LoadBalance, 1, 1000)
	// A flow from the wire, so its first fragments are remembered.
	inbound := pkt{srcMAC: gwMAC1, dstMAC: mac1, src: server, dst: addr1, proto: 17, sport: 53, dport: 7000}
	process(d, 1, inbound.build(t))
	const flood = maxFragsPerSource + 44
	for id := uint16(1); id <= flood; id++ {
		f1, _ := fragments(t, inbound, id)
		process(d, 1, f1)
	}
	if got := d.Counters().Load(FragTableFull); got != flood-maxFragsPerSource {
		t.Fatalf("%d first fragments refused, want %d (one source holds at most %d)", got, flood-maxFragsPerSource, maxFragsPerSource)
	}

	// Another wire source still gets its datagram's fragments followed.
	other := inbound
	other.src = [4]byte{198, 51, 100, 7}
	process(d, 1, other.build(t))
	o1, o2 := fragments(t, other, 9)
	process(d, 1, o1)
	if v := process(d, 1, o2); v.To != ToHost || d.Counters().Load(FragTableFull) != flood-maxFragsPerSource {
		t.Fatalf("a second source's fragment: %+v, refused %d", v, d.Counters().Load(FragTableFull))
	}

	// The host's NATed datagram: its later fragment is translated like the first.
	h1, h2 := fragments(t, pkt{srcMAC: mac0, dstMAC: gwMAC0, src: addr0, dst: server, proto: 17, sport: 7600, dport: 5000}, 77)
	if v := process(d, 0, h1); v.Iface != 1 {
		t.Fatalf("host's first fragment: %+v", v)
	}
	if v := process(d, 0, h2); v.To != ToWire || v.Iface != 1 {
		t.Fatalf("host's last fragment during a wire flood: %+v, want it on the first's uplink", v)
	}
}
