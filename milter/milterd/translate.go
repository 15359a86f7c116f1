package milterd

import (
	"strings"

	"github.com/postkit/postkit/milter/filter"
)

// translateOps maps the modifications recorded against the filters' header
// view onto the indexes Postfix applies. Postfix applies modifications in
// the order sent, each against the header list as left by the previous one,
// so most indexes carry over unchanged. Measured against Postfix 3.7
// (TestPostfixHeaderIndexes):
//
//   - The milter never sees the Received header Postfix adds for the current
//     hop, but that header sits at the top of Postfix's list when the
//     modifications are applied.
//   - SMFIR_CHGHEADER counts only headers of the given name that the milter
//     saw or that milters inserted (Postfix's own Received is not counted,
//     deleted headers are no longer counted): the view's occurrence number
//     is the right index as is.
//   - SMFIR_INSHEADER counts every header from the top, Postfix's own
//     Received included. Index 0 stays 0 (above everything: where DKIM
//     signatures go, as OpenDKIM puts them); any other index is translated
//     to "right after the view header that precedes the insertion point".
//   - SMFIR_ADDHEADER appends in both.
//
// Sendmail counts differently (it exposes its own Received to milters); the
// daemon targets Postfix.
func translateOps(orig []filter.Header, ops []filter.Op) []filter.Op {
	needed := false
	for _, op := range ops {
		if op.Kind == filter.OpInsertHeader && op.Index > 0 {
			needed = true
			break
		}
	}
	if !needed {
		return ops
	}
	// mta is Postfix's header list; hidden marks its own Received header.
	// The view is mta without the hidden entry.
	type entry struct {
		name   string
		hidden bool
	}
	mta := make([]entry, 0, len(orig)+len(ops)+1)
	mta = append(mta, entry{name: "Received", hidden: true})
	for _, h := range orig {
		mta = append(mta, entry{name: h.Name})
	}
	// mtaPos returns the position in mta of the k-th (0-based) view header,
	// or len(mta) past the end.
	mtaPos := func(k int) int {
		for i, e := range mta {
			if e.hidden {
				continue
			}
			if k == 0 {
				return i
			}
			k--
		}
		return len(mta)
	}
	viewLen := func() int { return len(mta) - 1 }
	out := make([]filter.Op, len(ops))
	for i, op := range ops {
		out[i] = op
		switch op.Kind {
		case filter.OpAddHeader:
			mta = append(mta, entry{name: op.Name})
		case filter.OpInsertHeader:
			k := min(max(op.Index, 0), viewLen())
			pos := 0
			if k > 0 {
				pos = mtaPos(k-1) + 1
			}
			out[i].Index = pos
			mta = append(mta[:pos], append([]entry{{name: op.Name}}, mta[pos:]...)...)
		case filter.OpChangeHeader:
			if op.Value != "" {
				continue
			}
			n := 0
			for j, e := range mta {
				if !e.hidden && strings.EqualFold(e.name, op.Name) {
					n++
					if n == op.Index {
						mta = append(mta[:j], mta[j+1:]...)
						break
					}
				}
			}
		}
	}
	return out
}
