package rules

// litMatcher finds which of a set of strings a text contains in one pass
// (Aho–Corasick: a trie of the strings whose every state knows where to go
// on each byte, failures folded in). The prefilter strings of all body and
// raw body rules share one matcher, so that a message's text is read once
// for all of them instead of once per string.
type litMatcher struct {
	class  [256]uint8 // byte → column; 0: no string holds the byte
	nclass int
	next   []int32   // state*nclass + class → state
	out    [][]int32 // strings that end at a state (suffixes included)
	n      int       // strings
}

// maxMatcherCells bounds a matcher's table (4 bytes a cell): rules files
// with so many strings that it would be larger go without one, each string
// looked for on its own.
const maxMatcherCells = 1 << 20

// newLitMatcher returns the matcher of lits, or nil when its table would
// exceed maxMatcherCells.
func newLitMatcher(lits []string) *litMatcher {
	m := &litMatcher{n: len(lits)}
	total := 1
	for _, l := range lits {
		total += len(l)
	}
	for _, l := range lits {
		for i := 0; i < len(l); i++ {
			if m.class[l[i]] == 0 {
				m.nclass++
				m.class[l[i]] = uint8(m.nclass)
			}
		}
	}
	m.nclass++ // column 0: bytes no string holds
	if total*m.nclass > maxMatcherCells {
		return nil
	}
	// The trie: -1 for no edge.
	edge := func() []int32 {
		e := make([]int32, m.nclass)
		for i := range e {
			e[i] = -1
		}
		return e
	}
	trie := [][]int32{edge()}
	m.out = [][]int32{nil}
	for id, l := range lits {
		s := int32(0)
		for i := 0; i < len(l); i++ {
			c := m.class[l[i]]
			if trie[s][c] < 0 {
				trie[s][c] = int32(len(trie))
				trie = append(trie, edge())
				m.out = append(m.out, nil)
			}
			s = trie[s][c]
		}
		m.out[s] = append(m.out[s], int32(id))
	}
	// Breadth first: each state's failure is the longest proper suffix
	// of its path that is a trie path; missing edges go where the
	// failure's go.
	m.next = make([]int32, len(trie)*m.nclass)
	fail := make([]int32, len(trie))
	queue := []int32{}
	for c := 0; c < m.nclass; c++ {
		if t := trie[0][c]; t > 0 {
			m.next[c] = t
			queue = append(queue, t)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		m.out[s] = append(m.out[s], m.out[fail[s]]...)
		for c := 0; c < m.nclass; c++ {
			t := trie[s][c]
			if t < 0 {
				m.next[int(s)*m.nclass+c] = m.next[int(fail[s])*m.nclass+c]
				continue
			}
			m.next[int(s)*m.nclass+c] = t
			fail[t] = m.next[int(fail[s])*m.nclass+c]
			queue = append(queue, t)
		}
	}
	return m
}

// scan returns, for each string, whether text contains it.
func (m *litMatcher) scan(text string) []bool {
	found := make([]bool, m.n)
	s := int32(0)
	for i := 0; i < len(text); i++ {
		s = m.next[int(s)*m.nclass+int(m.class[text[i]])]
		for _, id := range m.out[s] {
			found[id] = true
		}
	}
	return found
}
