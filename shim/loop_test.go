package shim

import (
	"slices"
	"testing"
)

// TestWatchdog: the heartbeat lags behind by the age of the oldest batch a loop is still
// working on; a loop waiting for frames (0) is idle, never stuck; a loop busy for longer than
// the limit is reported stuck once, and moving once it finishes.
func TestWatchdog(t *testing.T) {
	const ms = int64(1e6)
	type step struct {
		now    int64
		busy   []int64
		lag    int64
		stuck  []int
		moving []int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "idle loops", steps: []step{
			{now: 100 * ms, busy: []int64{0, 0}},
			{now: 5000 * ms, busy: []int64{0, 0}},
		}},
		{name: "busy with fresh batches", steps: []step{
			{now: 1000 * ms, busy: []int64{999 * ms, 990 * ms}, lag: 10 * ms},
			{now: 1100 * ms, busy: []int64{1099 * ms, 0}, lag: 1 * ms},
		}},
		{name: "one loop stuck beyond the limit, then moving", steps: []step{
			{now: 1000 * ms, busy: []int64{0, 900 * ms}, lag: 100 * ms},
			{now: 1900 * ms, busy: []int64{1899 * ms, 900 * ms}, lag: 1000 * ms},
			{now: 2000 * ms, busy: []int64{0, 900 * ms}, lag: 1100 * ms, stuck: []int{1}},
			{now: 2100 * ms, busy: []int64{0, 900 * ms}, lag: 1200 * ms},
			{now: 2200 * ms, busy: []int64{0, 2150 * ms}, lag: 50 * ms, moving: []int{1}},
			{now: 2300 * ms, busy: []int64{0, 0}},
		}},
		{name: "stuck loop goes idle", steps: []step{
			{now: 5000 * ms, busy: []int64{3000 * ms}, lag: 2000 * ms, stuck: []int{0}},
			{now: 5100 * ms, busy: []int64{0}, moving: []int{0}},
		}},
		{name: "two stuck, the oldest sets the lag", steps: []step{
			{now: 9000 * ms, busy: []int64{7000 * ms, 0, 6000 * ms}, lag: 3000 * ms, stuck: []int{0, 2}},
		}},
		{name: "a loop added later", steps: []step{
			{now: 1000 * ms, busy: []int64{0}},
			{now: 3000 * ms, busy: []int64{0, 1500 * ms}, lag: 1500 * ms, stuck: []int{1}},
		}},
		{name: "a mark from after now (read between the clock and the load)", steps: []step{
			{now: 1000 * ms, busy: []int64{1001 * ms}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := watchdog{limit: 1000 * ms}
			for i, st := range tc.steps {
				lag, stuck, moving := w.check(st.now, st.busy)
				if lag != st.lag || !slices.Equal(stuck, st.stuck) || !slices.Equal(moving, st.moving) {
					t.Errorf("step %d: lag %d ms, stuck %v, moving %v; want %d ms, %v, %v",
						i, lag/ms, stuck, moving, st.lag/ms, st.stuck, st.moving)
				}
			}
		})
	}
}
