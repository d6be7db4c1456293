package conntrack

import "errors"

// ErrNotLive is returned by Rekey for a pointer that is not a live flow of the table.
var ErrNotLive = errors.New("conntrack: not a live flow")

// Rekey gives a live flow a new wire-side key: the flow moved to another gateway (SYN-retry
// rotation, a down gateway's UDP flows) and its NAT mapping followed. The flow keeps its slot,
// its state and its place in the LRU lists.
func (t *Table) Rekey(p *Flow, reply Key) error {
	if p.Reply == reply {
		return nil
	}
	i := t.find(&t.reply, &p.Reply)
	if i < 0 || t.at(i) != p {
		return ErrNotLive
	}
	if t.find(&t.reply, &reply) >= 0 {
		return ErrExists
	}
	t.del(&t.reply, &p.Reply, i)
	p.Reply = reply
	t.add(&t.reply, &reply, i)
	return nil
}
