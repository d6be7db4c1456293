package shim

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/l2shim/l2shim/fastpath"
	"golang.org/x/sys/unix"
)

func mac(b byte) [6]byte { return [6]byte{0x02, 0, 0, 0, 0, b} }

func sortedMACs(m [][6]byte) [][6]byte {
	m = slices.Clone(m)
	slices.SortFunc(m, func(a, b [6]byte) int { return slices.Compare(a[:], b[:]) })
	return m
}

func TestMACDiff(t *testing.T) {
	tests := []struct {
		name                 string
		have, want, add, del [][6]byte
	}{
		{name: "empty"},
		{name: "first gateways", want: [][6]byte{mac(1), mac(2)}, add: [][6]byte{mac(1), mac(2)}},
		{name: "same", have: [][6]byte{mac(1), mac(2)}, want: [][6]byte{mac(2), mac(1)}},
		{name: "one removed", have: [][6]byte{mac(1), mac(2), mac(3)}, want: [][6]byte{mac(1), mac(3)}, del: [][6]byte{mac(2)}},
		{name: "all removed", have: [][6]byte{mac(1), mac(2)}, del: [][6]byte{mac(1), mac(2)}},
		{name: "replaced", have: [][6]byte{mac(1)}, want: [][6]byte{mac(9)}, add: [][6]byte{mac(9)}, del: [][6]byte{mac(1)}},
		{name: "two gateways share a MAC", have: [][6]byte{mac(1)}, want: [][6]byte{mac(1), mac(1), mac(2), mac(2)}, add: [][6]byte{mac(2)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			add, del := macDiff(tc.have, tc.want)
			if !slices.Equal(sortedMACs(add), sortedMACs(tc.add)) || !slices.Equal(sortedMACs(del), sortedMACs(tc.del)) {
				t.Errorf("add %x, del %x; want %x, %x", add, del, tc.add, tc.del)
			}
		})
	}
}

// TestSetGateways runs where BPF maps may be created (root, or CAP_BPF): after setGateways the
// hooks' map holds exactly the given MACs.
func TestSetGateways(t *testing.T) {
	m, err := newMaps(fastpath.Options{Mark: 0xa0, Mask: 0xf0, Heartbeat: time.Second, MaxFlows: 1024})
	if err != nil {
		if errors.Is(err, unix.EPERM) && os.Geteuid() != 0 {
			t.Skip("creating BPF maps needs root:", err)
		}
		t.Fatal(err)
	}
	defer m.Close()
	for _, want := range [][][6]byte{
		{mac(1), mac(2), mac(3)},
		{mac(1), mac(3)},
		{mac(4)},
		{mac(4), mac(4), mac(5)},
		nil,
	} {
		if err := m.setGateways(want); err != nil {
			t.Fatal(err)
		}
		got, err := m.gatewayMACs()
		if err != nil {
			t.Fatal(err)
		}
		add, del := macDiff(got, want)
		if len(add)+len(del) > 0 || len(got) != len(slices.Compact(sortedMACs(want))) {
			t.Errorf("map holds %x, want %x", got, want)
		}
	}
}
