package matchers

// One automaton for all the string matches of a rule set.
//
// Per packet, xt_string searches each rule's pattern on its own: a rule set
// with a thousand string rules reads a packet a thousand times. stringSet
// compiles every pattern into one Aho-Corasick automaton (a full DFA over
// byte classes), so a packet is read once, at the first string match it
// reaches, however many patterns there are; every string match then
// answers from that scan, in its own rule's turn, so rule order and
// first-match semantics are untouched.
//
// The answers are the kernel's, not an approximation:
//
//   - The automaton reads the text folded with the kernel's toupper (the
//     --icase table) and holds each pattern folded once (setByte). A
//     --icase pattern's occurrences are exactly its folded occurrences; a
//     case-sensitive pattern's are among them and each candidate is
//     checked byte for byte before it counts.
//   - For each pattern the scan keeps the first occurrence that starts at
//     or after the match's --from. The match's window is [from, min(to,
//     length)), so the pattern occurs in it exactly when that occurrence
//     also ends within it.
//   - kmp finds every occurrence, so that is its answer. The kernel's bm
//     never reports a false occurrence but misses some real ones (see
//     string.go), so when the scan finds one in the window a bm match
//     runs its own search over the window to give the kernel's answer;
//     when the scan finds none, bm finds none either.
//
// Hand-written rather than github.com/coregx/ahocorasick (v0.3.1): that
// library reports leftmost non-overlapping matches, and its overlapping
// search returns a freshly allocated slice per call, while this needs
// every pattern's first occurrence from an offset of its own, with no
// allocation per packet.

import "math"

// stringSet is the compiled automaton of a rule set's string matches.
type stringSet struct {
	// class maps a raw text byte to the class of its folded value.
	class [256]uint8
	// shift is log2 of a state's row width (the number of classes
	// rounded up to a power of two).
	shift uint32
	// trans is the DFA: trans[s<<shift|class] is the next state. States
	// are numbered so that those ending a pattern come last: a state at
	// or above outMin ends at least one (its own or through its failure
	// chain), so the scan loop tests one comparison per byte.
	trans  []uint32
	outMin uint32
	// exc marks, per state, the classes whose next state is not the
	// root's next state for that class (one bit each, 1<<excShift words
	// of 64 bits per state). Most bytes of most packets leave a shallow
	// state the way they would leave the root; for them the scan reads
	// the root's row, which stays in the first-level cache however large
	// the automaton, and the test of the bit is a well-predicted branch
	// that takes the table load off the chain of dependent loads.
	exc      []uint64
	excShift uint32
	// ownList[ownStart[s]:ownStart[s+1]] are the patterns ending exactly
	// at state s; dict[s] is the nearest state on s's failure chain that
	// ends a pattern, +1 (0 = none).
	ownStart []int32
	ownList  []int32
	dict     []int32
	pats     []setPattern
	// lo and hi bound the bytes any match searches: min(from), max(to);
	// maxLen is the longest pattern.
	lo, hi, maxLen int
}

// setPattern is one string match in the set.
type setPattern struct {
	m    *stringMatch
	n    int
	from int
	// raw: case-sensitive, so a folded occurrence needs a byte check.
	raw bool
}

// stringScan is one packet's scan: for each pattern, the earliest
// occurrence that starts at or after its --from, if any. Entries are valid
// when their stamp is the scan's epoch, so starting a new scan clears
// nothing.
type stringScan struct {
	set   *stringSet
	epoch uint32
	stamp []uint32
	first []int32
	// data is the scanned packet's Network slice (for the checks).
	data []byte
}

// newStringSet compiles ms (string matches without --stream).
func newStringSet(ms []*stringMatch) *stringSet {
	s := &stringSet{lo: math.MaxInt}
	// The alphabet: every byte a pattern holds (setByte) gets a class of
	// its own; every other byte shares class 0.
	var used [256]bool
	for _, m := range ms {
		for _, c := range m.search {
			used[setByte(m, c)] = true
		}
	}
	var byteClass [256]uint16
	nclass := uint32(1)
	for c := range used {
		if used[c] {
			byteClass[c] = uint16(nclass)
			nclass++
		}
	}
	for s.shift = 0; 1<<s.shift < nclass; s.shift++ {
	}
	for c := range s.class {
		// At most 255 classes besides 0: the fold maps several bytes
		// to one, so not all 256 values can be used.
		s.class[c] = uint8(byteClass[kernelToUpper[c]])
	}

	// The trie, with a child map per node.
	type node struct {
		next map[uint16]int32
		own  []int32
	}
	nodes := []node{{}}
	for id, m := range ms {
		cur := int32(0)
		for _, c := range m.search {
			cl := byteClass[setByte(m, c)]
			nx, ok := nodes[cur].next[cl]
			if !ok {
				nx = int32(len(nodes))
				nodes = append(nodes, node{})
				if nodes[cur].next == nil {
					nodes[cur].next = map[uint16]int32{}
				}
				nodes[cur].next[cl] = nx
			}
			cur = nx
		}
		nodes[cur].own = append(nodes[cur].own, int32(id))
		s.pats = append(s.pats, setPattern{m: m, n: len(m.search), from: int(m.from), raw: !m.icase})
		s.lo = min(s.lo, int(m.from))
		s.hi = max(s.hi, int(m.to))
		s.maxLen = max(s.maxLen, len(m.search))
	}

	// Failure links and dictionary links, breadth first.
	ns := len(nodes)
	fail := make([]int32, ns)
	dict := make([]int32, ns) // trie numbering, +1
	hasOut := make([]bool, ns)
	order := []int32{0}
	for i := 0; i < len(order); i++ {
		u := order[i]
		for cl, v := range nodes[u].next {
			if u != 0 {
				f := fail[u]
				for f != 0 {
					if _, ok := nodes[f].next[cl]; ok {
						break
					}
					f = fail[f]
				}
				fail[v] = nodes[f].next[cl] // 0 (the root) when absent
			}
			if len(nodes[fail[v]].own) > 0 {
				dict[v] = fail[v] + 1
			} else {
				dict[v] = dict[fail[v]]
			}
			hasOut[v] = len(nodes[v].own) > 0 || dict[v] != 0
			order = append(order, v)
		}
	}
	// Renumber: states without output first (the root is one), in BFS
	// order so that a state's failure row is filled before its own.
	num := make([]uint32, ns)
	n := uint32(0)
	for _, pass := range []bool{false, true} {
		for _, u := range order {
			if hasOut[u] == pass {
				num[u] = n
				n++
			}
			if !pass {
				s.outMin = n
			}
		}
	}
	// Fill rows in BFS order (a failure state is shallower, so done).
	width := uint32(1) << s.shift
	s.trans = make([]uint32, uint32(ns)*width)
	for _, u := range order {
		row := s.trans[num[u]*width : (num[u]+1)*width]
		frow := s.trans[num[fail[u]]*width:]
		for cl := uint32(0); cl < nclass; cl++ {
			if v, ok := nodes[u].next[uint16(cl)]; ok {
				row[cl] = num[v]
			} else if u != 0 {
				row[cl] = frow[cl]
			}
		}
	}
	// The exception bits: where a row differs from the root's.
	if width > 64 {
		s.excShift = s.shift - 6
	}
	s.exc = make([]uint64, uint32(ns)<<s.excShift)
	for u := uint32(1); u < uint32(ns); u++ {
		for cl := uint32(0); cl < nclass; cl++ {
			if s.trans[u*width+cl] != s.trans[cl] {
				s.exc[u<<s.excShift|cl>>6] |= 1 << (cl & 63)
			}
		}
	}
	// Outputs in the new numbering.
	own := make([][]int32, ns)
	s.dict = make([]int32, ns)
	for u := range nodes {
		own[num[u]] = nodes[u].own
		if dict[u] != 0 {
			s.dict[num[u]] = int32(num[dict[u]-1]) + 1
		}
	}
	s.ownStart = make([]int32, ns+1)
	for u := 0; u < ns; u++ {
		s.ownStart[u+1] = s.ownStart[u] + int32(len(own[u]))
		s.ownList = append(s.ownList, own[u]...)
	}
	return s
}

// setByte is pattern byte c as the automaton holds it: the text's folded
// value that it must equal. A --icase pattern is stored folded already
// (folding twice is not folding once: the kernel's toupper takes 0xff to
// 0xdf and 0xdf to 0xbf); a case-sensitive one is folded here, and its
// candidates are checked against the raw bytes.
func setByte(m *stringMatch, c byte) byte {
	if m.icase {
		return c
	}
	return kernelToUpper[c]
}

// newScan returns a scan buffer for s.
func (s *stringSet) newScan() *stringScan {
	return &stringScan{set: s, stamp: make([]uint32, len(s.pats)), first: make([]int32, len(s.pats))}
}

// scanLanes is the number of parts of a packet scanned side by side: the
// DFA's next state depends on the previous one, so one walk waits for
// each table load; four independent walks over four parts of the packet
// overlap those waits.
const scanLanes = 4

// scan reads data once and records every pattern's earliest occurrence
// at or after its --from.
func (s *stringSet) scan(sc *stringScan, data []byte) {
	sc.epoch++
	if sc.epoch == 0 { // wrapped: old stamps could look current
		clear(sc.stamp)
		sc.epoch = 1
	}
	sc.data = data
	lo, hi := s.lo, min(s.hi, len(data))
	if lo >= hi {
		return
	}
	// Lane k reads [start[k], end[k]): its own quarter, preceded by the
	// maxLen-1 bytes before it, so that every occurrence ending in its
	// quarter lies wholly in what it reads. The overlaps report some
	// occurrences twice, which hit absorbs.
	var start, end [scanLanes]int
	part := (hi - lo + scanLanes - 1) / scanLanes
	if part < 4*s.maxLen {
		s.walk(sc, data, lo, hi, 0)
		return
	}
	for k := range start {
		start[k] = max(lo, lo+k*part-(s.maxLen-1))
		end[k] = min(hi, lo+(k+1)*part)
	}
	// Side by side for as long as the shortest lane, then each lane to
	// its end.
	common := end[0] - start[0]
	for k := 1; k < scanLanes; k++ {
		common = min(common, end[k]-start[k])
	}
	step := s.stepper()
	outMin := s.outMin
	var st [scanLanes]uint32
	d0, d1, d2, d3 := data[start[0]:start[0]+common], data[start[1]:start[1]+common], data[start[2]:start[2]+common], data[start[3]:start[3]+common]
	for i := range d0 {
		st[0] = step(st[0], d0[i])
		st[1] = step(st[1], d1[i])
		st[2] = step(st[2], d2[i])
		st[3] = step(st[3], d3[i])
		if st[0] >= outMin || st[1] >= outMin || st[2] >= outMin || st[3] >= outMin {
			for k := range st {
				if st[k] >= outMin {
					s.hit(sc, st[k], start[k]+i+1)
				}
			}
		}
	}
	for k := range st {
		s.walk(sc, data, start[k]+common, end[k], st[k])
	}
}

// stepper returns the DFA's step from a state on a text byte, with the
// tables in local variables (the compiler does not hoist loads through s
// out of the scan loops; the closure is inlined where it is called).
func (s *stringSet) stepper() func(st uint32, b byte) uint32 {
	trans, exc, class, shift, excShift := s.trans, s.exc, &s.class, s.shift, s.excShift
	return func(st uint32, b byte) uint32 {
		c := uint32(class[b])
		if exc[st<<excShift|c>>6]&(1<<(c&63)) == 0 {
			return trans[c] // as from the root
		}
		return trans[st<<shift|c]
	}
}

// walk runs the DFA from state st over data[i:end].
func (s *stringSet) walk(sc *stringScan, data []byte, i, end int, st uint32) {
	step, outMin := s.stepper(), s.outMin
	for ; i < end; i++ {
		st = step(st, data[i])
		if st >= outMin {
			s.hit(sc, st, i+1)
		}
	}
}

// hit records the patterns that end at state u, at text offset end.
func (s *stringSet) hit(sc *stringScan, u uint32, end int) {
	for {
		for _, id := range s.ownList[s.ownStart[u]:s.ownStart[u+1]] {
			p := &s.pats[id]
			start := end - p.n
			if start < p.from || sc.stamp[id] == sc.epoch && int(sc.first[id]) <= start {
				continue // before its --from, or not the earliest
			}
			if p.raw && string(sc.data[start:end]) != string(p.m.search) {
				continue // a folded occurrence only
			}
			sc.stamp[id], sc.first[id] = sc.epoch, int32(start)
		}
		d := s.dict[u]
		if d == 0 {
			return
		}
		u = uint32(d - 1)
	}
}

// found answers for pattern id what the per-match search would: whether
// the match's own algorithm finds its pattern in its window.
func (sc *stringScan) found(id int32) bool {
	if sc.stamp[id] != sc.epoch {
		return false
	}
	p := &sc.set.pats[id]
	m := p.m
	end := min(len(sc.data), int(m.to))
	if int(sc.first[id])+p.n > end {
		return false
	}
	if m.algo == algoBM {
		// An occurrence exists; whether the kernel's bm sees it is
		// decided by bm itself.
		return m.findBM(sc.data[m.from:end]) >= 0
	}
	return true
}

// linkStrings compiles the string matches among ms into one set when
// there are at least minStringSet of them, and points each at its
// pattern; it returns the set, or nil.
func linkStrings(ms []Match) *stringSet {
	var sms []*stringMatch
	for _, m := range ms {
		if sm, ok := m.(*stringMatch); ok {
			sms = append(sms, sm)
		}
	}
	if len(sms) < minStringSet {
		return nil
	}
	return compileStrings(sms)
}

// compileStrings compiles sms into one set and points each at it.
func compileStrings(sms []*stringMatch) *stringSet {
	set := newStringSet(sms)
	for id, sm := range sms {
		sm.set, sm.setID = set, int32(id)
	}
	return set
}

// minStringSet is the number of string matches from which the shared scan
// is used. One scan costs about what three or four searches of the
// kernel's bm cost on a 1,500-byte packet (BenchmarkStringScan: bm skips
// bytes, the automaton reads them all), and a packet may reach only some
// of a rule set's string matches.
const minStringSet = 4
