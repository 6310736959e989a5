package conn

import (
	"slices"
)

// Select returns snapshots of the connections that match f, sorted by
// conid: every connection in the table, or, with ids, only those of ids
// (an id not in the table matches nothing). f's After and Limit are
// ignored: a selection is always whole.
func (t *Table) Select(f Filter, ids []uint64) []Info {
	f.After, f.Limit = 0, 0
	if ids == nil {
		infos, _ := t.List(f)
		return infos
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	now := t.clock()
	var out []Info
	for _, id := range ids {
		c, ok := t.Get(id)
		if !ok {
			continue
		}
		in := c.info(now)
		if f.match(&in) {
			out = append(out, in)
		}
	}
	return out
}
