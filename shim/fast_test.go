package shim

import (
	"net/netip"
	"testing"

	"github.com/l2shim/l2shim/conntrack"
	"github.com/l2shim/l2shim/datapath"
	"github.com/l2shim/l2shim/fastpath"
)

// TestFastConversions: the engine's keys and entries reach the kernel's maps with the
// addresses they name, IPv4 as IPv4 (the programs' keys hold it IPv4-mapped), and come back
// from an adoption as they were; an entry without a gateway stays without one.
func TestFastConversions(t *testing.T) {
	v4 := conntrack.Key4([4]byte{10, 1, 0, 2}, [4]byte{203, 0, 113, 10}, 40000, 443, 6)
	v6 := conntrack.Key{Src: netip.MustParseAddr("2001:db8::2").As16(), Dst: netip.MustParseAddr("2001:db8:1::10").As16(), SrcPort: 40000, DstPort: 443, Proto: 6}
	for _, k := range []conntrack.Key{v4, v6} {
		fk := fastKey(k)
		if fk.Src != conntrack.Addr(k.Src) || fk.Dst != conntrack.Addr(k.Dst) || fk.SrcPort != 40000 || fk.DstPort != 443 || fk.Proto != 6 {
			t.Fatalf("fastKey(%v) = %+v", k, fk)
		}
		if back := engineKey(fk); back != k {
			t.Fatalf("engineKey(fastKey(%v)) = %v", k, back)
		}
	}
	if k := fastKey(v4); !k.Src.Is4() || k.Src.String() != "10.1.0.2" || k.Dst.String() != "203.0.113.10" {
		t.Fatalf("IPv4 key in the kernel's terms: %v → %v", k.Src, k.Dst)
	}

	e := datapath.FastEntry{Ifindex: 3, NAT: true, Addr: conntrack.Addr4([4]byte{10, 2, 0, 2}), Port: 61000, MTU: 1492, SrcMAC: mac(1), DstMAC: mac(2),
		Origin: 1, Why: 4, Rule: 2, Gateway: conntrack.Addr4([4]byte{10, 2, 0, 1})}
	fe := fastEntry(e)
	if !fe.NAT || fe.Addr != netip.MustParseAddr("10.2.0.2") || fe.Gateway != netip.MustParseAddr("10.2.0.1") || fe.Port != 61000 || fe.MTU != 1492 {
		t.Fatalf("fastEntry = %+v", fe)
	}
	if back := engineEntry(fe); back != e {
		t.Fatalf("engineEntry(fastEntry(e)) =\n%+v, want\n%+v", back, e)
	}
	e.NAT, e.Addr, e.Port, e.Gateway = false, [16]byte{}, 0, [16]byte{}
	fe = fastEntry(e)
	if fe.Gateway.IsValid() || fe.NAT {
		t.Fatalf("no gateway, no NAT: %+v", fe)
	}
	if back := engineEntry(fe); back != e {
		t.Fatalf("engineEntry(fastEntry(e)) =\n%+v, want\n%+v", back, e)
	}

	// An in entry's flow: its host-side tuple, NAT undone.
	in := fastpath.Installed{Key: fastKey(conntrack.Key4([4]byte{203, 0, 113, 10}, [4]byte{10, 2, 0, 2}, 443, 61000, 6)),
		Entry: fastpath.Entry{NAT: true, Addr: netip.MustParseAddr("10.1.0.2"), Port: 40000}}
	if o := engineKey(origOf(in)); o != v4 {
		t.Fatalf("origOf = %v, want %v", o, v4)
	}
}
