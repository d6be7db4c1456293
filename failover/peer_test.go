package failover

import (
	"testing"
	"time"
)

// TestPeerWatch feeds a tunnel's counters second by second: idle (never judged), sending
// without answers (silent after the limit), answers (back at once), an idle silent tunnel
// retried, a counter reset.
func TestPeerWatch(t *testing.T) {
	const limit = 13 * time.Second
	t0 := time.Unix(1000, 0)
	var w PeerWatch
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	expect := func(s int, rx, tx uint64, wantChanged, wantSilent bool) {
		t.Helper()
		changed, silent, reason := w.Sample(at(s), rx, tx, limit)
		if changed != wantChanged || silent != wantSilent {
			t.Fatalf("t=%ds rx=%d tx=%d: changed %v silent %v (%q); want %v %v", s, rx, tx, changed, silent, reason, wantChanged, wantSilent)
		}
	}
	expect(0, 100, 100, false, false)
	// Idle for a minute: never judged.
	for s := 1; s <= 60; s++ {
		expect(s, 100, 100, false, false)
	}
	// Traffic with answers.
	expect(61, 200, 200, false, false)
	// Sending, nothing back: silent once the first unanswered send is more than 13 s old.
	for s := 62; s <= 75; s++ {
		expect(s, 200, uint64(200+s), false, false)
	}
	expect(76, 200, 276, true, true)
	expect(77, 200, 277, false, true)
	// An answer: back at once.
	expect(78, 300, 278, true, false)
	// Silent again, then nothing more offered: retried after the limit.
	for s := 79; s <= 92; s++ {
		expect(s, 300, uint64(300+s), false, false)
	}
	expect(93, 300, 393, true, true)
	for s := 94; s <= 106; s++ {
		expect(s, 300, 393, false, true)
	}
	expect(107, 300, 393, true, false)
	// Counters reset (device re-created): afresh, not silent.
	expect(108, 300, 500, false, false)
	expect(109, 0, 0, false, false)
}
