package conntrack

// Walk calls fn for each live flow in slot order, starting at slot from and looking at no more
// than budget slots, until fn returns false. It returns the slot to continue from, or -1 once
// it has reached the end of the table.
//
// A flow keeps its slot for its whole life, so walking a table page by page, releasing its
// lock between pages, lists every flow that lives throughout at most once; flows created or
// removed meanwhile may or may not be listed. fn must not modify the table.
func (t *Table) Walk(from, budget int, fn func(*Flow) bool) int {
	end := len(t.chunks) * chunkSize
	if from < 0 {
		from = 0
	}
	for i := from; i < end; i++ {
		if budget <= 0 {
			return i
		}
		budget--
		f := t.at(int32(i))
		if f.list < numLists && !fn(f) {
			if i+1 >= end {
				return -1
			}
			return i + 1
		}
	}
	return -1
}
