package engine

import (
	"math/bits"
	"slices"
	"strings"

	"github.com/qtables/qtables/matchers"
)

// A classifier finds, for one chain and one packet, the first rule at or
// after a given position that may match: per-field lookups with bitmap
// intersection (the Lucent bit-vector scheme, with aggregated summaries and
// sparse storage).
//
// Each indexed field's key space is cut into elementary intervals at every
// boundary of a rule's key set (see classify_rule.go); each interval has a
// bitmap of the rules whose set holds it. A packet's candidates are the AND
// of its intervals' bitmaps, scanned from the resume position; a summary
// bit per 64 rules skips empty words, so finding the first candidate among
// 10,000 rules reads a few words per field. The candidate is then evaluated
// in full by progRule.match, which keeps every semantic (unindexed matches,
// negations, hot-drops, counters, targets) exactly as linear evaluation has
// it: the bitmaps only skip rules that would fail without effect.
//
// Memory decides the speed (a bitmap per interval of 10,000 rules is 1.25
// KiB, and a packet reads a random word of each field's), so each field's
// bitmaps are split: the rules that hold every key of the field, and the
// widest ranges when the rest would exceed a budget, form one dense "wide"
// bitmap shared by all intervals (treating a range as every key only adds
// candidates, which the full evaluation rejects); the other rules' bits are
// stored per interval as their non-zero words only, found by rank in the
// interval's summary. Identical interval bitmaps are stored once. Fields
// are scanned most selective first, so that a word without a candidate is
// usually dismissed by one load.
type classifier struct {
	nRules   int
	nChunks  int // chunks per bitmap
	sumWords int // summary words per bitmap: a bit per chunk
	recWords int // words per interval record: 1 + sumWords
	fields   []fieldIndex
	// recs holds every field's interval records: the offset in data of
	// the interval's stored words, then its summary (bit w set when word
	// w is stored).
	recs []uint64
	// data holds the stored (non-zero) chunks of every interval bitmap.
	data []chunk
	// wide and wideSum hold the fields' wide bitmaps and their summaries,
	// interleaved: word w of the field at position i is at w*nf+i.
	wide     []chunk
	wideSum  []uint64
	markMask uint32
	size     int // bytes held, for CompiledBytes
}

// A chunk is the unit of bitmap storage and of the summary: chunkBits
// rules. Smaller chunks make the summary more precise (a chunk in which
// every field holds some rule but no rule is in all is visited for
// nothing) at the cost of a longer summary.
type chunk = uint32

const chunkBits = 32

// chunkAt returns chunk c of the dense bitmap b.
func chunkAt(b []uint64, c int) chunk {
	return chunk(b[c*chunkBits/64] >> (c * chunkBits % 64))
}

// fieldIndex maps one field's key to its interval's record.
type fieldIndex struct {
	id fieldID
	// first is the offset in classifier.recs of the record of interval
	// 0; interval i's is at first + i*recWords.
	first int
	// starts are the intervals' first keys (starts[0] == 0).
	starts []uint32
	// top narrows the search: the interval holding key k is between
	// top[k>>shift] and top[k>>shift+1].
	top   []uint32
	shift uint8
	// names are the interface fields' boundaries: interval i holds the
	// device names from names[i] up to names[i+1] (names[0] == "").
	names []string
	// density estimates the share of rules a packet's row holds, to
	// order the scan.
	density float64
}

// lookupKey returns the offset of the record of the interval holding k.
func (cl *classifier) lookupKey(fi *fieldIndex, k uint32) uint32 {
	t := k >> fi.shift
	top := fi.top[t : t+2 : t+2]
	lo, hi := top[0], top[1]
	s := fi.starts
	for lo < hi {
		mid := (lo + hi + 1) >> 1
		if s[mid] <= k {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return uint32(fi.first) + lo*uint32(cl.recWords)
}

// lookupName returns the offset of the record of device name dev.
func (cl *classifier) lookupName(fi *fieldIndex, dev string) uint32 {
	lo, hi := 0, len(fi.names)-1
	for lo < hi {
		mid := int(uint(lo+hi+1) >> 1)
		if fi.names[mid] <= dev {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return uint32(fi.first + lo*cl.recWords)
}

// rowSet is the per-field record offsets of one packet.
type rowSet [numFields]uint32

// lookup fills rows with the packet's record offsets.
func (cl *classifier) lookup(c *matchers.Context, src, dst uint32, rows *rowSet) {
	for i := range cl.fields {
		fi := &cl.fields[i]
		var r uint32
		switch fi.id {
		case fSrc:
			r = cl.lookupKey(fi, src)
		case fDst:
			r = cl.lookupKey(fi, dst)
		case fIn:
			r = cl.lookupName(fi, c.In)
		case fOut:
			r = cl.lookupName(fi, c.Out)
		default:
			r = cl.lookupKey(fi, fieldKey(fi.id, c, src, dst, cl.markMask))
		}
		rows[i] = r
	}
}

// first returns the index of the first candidate rule at or after from,
// or the number of rules when there is none.
func (cl *classifier) first(rows *rowSet, from int) int {
	if from >= cl.nRules {
		return cl.nRules
	}
	nf := len(cl.fields)
	recs, data, wide, wsum := cl.recs, cl.data, cl.wide, cl.wideSum
	c0 := from / chunkBits
	s0 := c0 >> 6
	// base[f] is where field f's stored chunks of summary word s begin;
	// sums[f] is its summary word s.
	var baseA, sumsA [numFields]uint64
	base, sums := baseA[:nf], sumsA[:nf]
	for f := range base {
		r := int(rows[f])
		b := recs[r]
		for s := 0; s < s0; s++ {
			b += uint64(bits.OnesCount64(recs[r+1+s]))
		}
		base[f] = b
	}
	for s := s0; s < cl.sumWords; s++ {
		agg := ^uint64(0)
		ws := wsum[s*nf : s*nf+nf]
		ws = ws[:len(sums)]
		for f := range sums {
			sums[f] = recs[int(rows[f])+1+s]
			agg &= sums[f] | ws[f]
		}
		if s == s0 {
			agg &= ^uint64(0) << (c0 & 63)
		}
		for agg != 0 {
			bit := uint(bits.TrailingZeros64(agg))
			c := s<<6 | int(bit)
			below := uint64(1)<<bit - 1
			wv := wide[c*nf : c*nf+nf]
			wv = wv[:len(sums)]
			x := ^chunk(0)
			for f, sum := range sums {
				word := wv[f]
				if sum>>bit&1 != 0 {
					word |= data[base[f]+uint64(bits.OnesCount64(sum&below))]
				}
				if x &= word; x == 0 {
					break
				}
			}
			if c == c0 {
				x &= ^chunk(0) << (from % chunkBits)
			}
			if x != 0 {
				return c*chunkBits + bits.TrailingZeros64(uint64(x))
			}
			agg &= agg - 1
		}
		for f, sum := range sums {
			base[f] += uint64(bits.OnesCount64(sum))
		}
	}
	return cl.nRules
}

// buildClassifier indexes the rules of one chain, or returns nil when no
// rule constrains an indexable field (every rule would be a candidate).
// It records in each progRule where indexing stopped.
func buildClassifier(rules []*Rule, prog []progRule, mcache map[string]matchCons) *classifier {
	derive := func(mi MatchInstance, r *Rule) matchCons {
		var b strings.Builder
		b.WriteString(mi.Name)
		b.WriteByte(0)
		if r.InvProto {
			b.WriteByte('!')
		}
		b.WriteString(string(rune(r.Proto)))
		b.WriteByte(0)
		mi.Match.Save(&b)
		key := b.String()
		if mc, ok := mcache[key]; ok {
			return mc
		}
		mc := deriveMatch(mi, r)
		if mc.class != classStateful && !probeMatch(mi.Match, r, &mc) {
			mc = matchCons{class: classStateful}
			for i := range mc.sets {
				mc.sets[i] = allKeys
			}
		}
		mcache[key] = mc
		return mc
	}
	cons := make([]ruleCons, len(rules))
	for i, r := range rules {
		cons[i] = deriveRule(r, derive)
		prog[i].stop = int32(cons[i].stop)
	}
	cl := &classifier{nRules: len(rules)}
	cl.markMask = chooseMarkMask(cons)
	for i := range cons {
		cons[i].sets[fMark] = markSet(cons[i].marks, cl.markMask)
	}
	cl.nChunks = (len(rules) + chunkBits - 1) / chunkBits
	cl.sumWords = (cl.nChunks + 63) / 64
	cl.recWords = 1 + cl.sumWords
	b := &bitmapBuilder{cl: cl}
	var fields []builtField
	for f := fieldID(0); f < numFields; f++ {
		var bf builtField
		var ok bool
		switch f {
		case fIn, fOut:
			bf, ok = b.ifaceField(f, cons)
		default:
			bf, ok = b.intField(f, cons)
		}
		if ok {
			fields = append(fields, bf)
		}
	}
	if len(fields) == 0 {
		return nil
	}
	// Scan the most selective fields first.
	slices.SortStableFunc(fields, func(a, b builtField) int {
		switch {
		case a.density < b.density:
			return -1
		case a.density > b.density:
			return 1
		}
		return 0
	})
	// The wide bitmaps and summaries are interleaved, word w of field i
	// at w*len(fields)+i, so that one visit reads one cache line.
	nf := len(fields)
	cl.wide = make([]chunk, cl.nChunks*nf)
	cl.wideSum = make([]uint64, cl.sumWords*nf)
	for i, bf := range fields {
		cl.fields = append(cl.fields, bf.fieldIndex)
		for w, x := range bf.wide {
			cl.wide[w*nf+i] = x
		}
		for s, x := range bf.wideSum {
			cl.wideSum[s*nf+i] = x
		}
	}
	cl.data = slices.Clip(cl.data)
	cl.recs = slices.Clip(cl.recs)
	cl.size = (len(cl.recs)+len(cl.wideSum))*8 + (len(cl.data)+len(cl.wide))*chunkBits/8
	for i := range cl.fields {
		fi := &cl.fields[i]
		cl.size += 4 * (len(fi.starts) + len(fi.top))
		for _, n := range fi.names {
			cl.size += 16 + len(n)
		}
	}
	return cl
}

// chooseMarkMask picks the mask most mark matches use: the classifier
// indexes the mark ANDed with one mask; matches with other masks stay
// unindexed (checked on the candidate).
func chooseMarkMask(cons []ruleCons) uint32 {
	count := map[uint32]int{}
	best, bestN := uint32(0xffffffff), 0
	for i := range cons {
		for _, m := range cons[i].marks {
			count[m.mask]++
			if n := count[m.mask]; n > bestN || n == bestN && m.mask < best {
				best, bestN = m.mask, n
			}
		}
	}
	return best
}

// markSet is the mark key set of a rule's mark matches that use mask.
func markSet(marks []markCons, mask uint32) keySet {
	s := allKeys
	for _, m := range marks {
		if m.mask != mask {
			continue
		}
		var t keySet
		if m.value&^mask == 0 {
			t = oneInterval(m.value, m.value)
		}
		if m.inv {
			t = t.complement(0xffffffff)
		}
		s = s.intersect(t)
	}
	return s
}

// bitmapBuilder builds fields' bitmaps into one classifier.
type bitmapBuilder struct {
	cl *classifier
}

// builtField is a field's index with its wide bitmap, before the fields
// are ordered.
type builtField struct {
	fieldIndex
	wide    []chunk
	wideSum []uint64
}

// zobrist is the hash contribution of rule i's bit, so that a bitmap's
// hash is updated in O(1) as bits toggle during the sweep.
func zobrist(i int) uint64 {
	z := uint64(i)*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// toggle is a sweep event: rule's bit flips at key pos.
type toggle struct {
	pos  uint64 // up to fieldMax+1
	rule int32
}

// wideBudget bounds the words stored per field: with b elementary
// intervals and n rules, the narrow rules' bits may cover at most
// 8*(b+n) interval-rule pairs; the widest rules beyond that are wide.
func wideBudget(intervals, rules int) int { return 8 * (intervals + rules) }

// field builds the records, stored words and wide bitmap of one field
// whose per-rule sets are sets (keys 0..maxKey), merging neighbouring
// intervals with the same bitmap.
func (b *bitmapBuilder) field(f fieldID, sets []keySet, maxKey uint32) builtField {
	cl := b.cl
	nw, nc, sw := (len(sets)+63)/64, cl.nChunks, cl.sumWords
	bf := builtField{fieldIndex: fieldIndex{id: f}, wideSum: make([]uint64, sw)}
	wide := make([]uint64, nw)
	// Elementary boundaries and each narrow rule's coverage.
	bounds := []uint64{0}
	for _, s := range sets {
		for _, x := range s.iv {
			bounds = append(bounds, uint64(x.lo), uint64(x.hi)+1)
		}
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	idx := func(k uint64) int { i, _ := slices.BinarySearch(bounds, k); return i }
	type cover struct{ rule, n int }
	var covers []cover
	total, nWide := 0, 0
	for i, s := range sets {
		if s.all {
			wide[i>>6] |= 1 << (i & 63)
			nWide++
			continue
		}
		n := 0
		for _, x := range s.iv {
			n += idx(uint64(x.hi)+1) - idx(uint64(x.lo))
		}
		covers = append(covers, cover{i, n})
		total += n
	}
	if budget := wideBudget(len(bounds), len(sets)); total > budget {
		slices.SortFunc(covers, func(a, b cover) int { return b.n - a.n })
		for _, c := range covers {
			if total <= budget {
				break
			}
			wide[c.rule>>6] |= 1 << (c.rule & 63)
			nWide++
			total -= c.n
		}
	}
	bf.wide = make([]chunk, nc)
	for c := range bf.wide {
		if bf.wide[c] = chunkAt(wide, c); bf.wide[c] != 0 {
			bf.wideSum[c>>6] |= 1 << (c & 63)
		}
	}

	// Sweep the narrow rules' intervals.
	var ev []toggle
	for i, s := range sets {
		if wide[i>>6]&(1<<(i&63)) != 0 {
			continue
		}
		for _, x := range s.iv {
			ev = append(ev, toggle{uint64(x.lo), int32(i)})
			if x.hi < maxKey {
				ev = append(ev, toggle{uint64(x.hi) + 1, int32(i)})
			}
		}
	}
	slices.SortFunc(ev, func(a, b toggle) int {
		switch {
		case a.pos < b.pos:
			return -1
		case a.pos > b.pos:
			return 1
		}
		return int(a.rule - b.rule)
	})
	cur := make([]uint64, nw)
	sum := make([]uint64, sw)
	var words []chunk
	var h uint64
	// seen maps a bitmap's hash to records holding such a bitmap.
	seen := map[uint64][]int{}
	bf.first = len(cl.recs)
	last := -1
	at := uint64(0)
	// weight and dense accumulate the density estimate: each interval
	// weighted by the rules it holds.
	var weight, dense float64
	for j := 0; ; {
		for ; j < len(ev) && ev[j].pos == at; j++ {
			i := int(ev[j].rule)
			cur[i>>6] ^= 1 << (i & 63)
			h ^= zobrist(i)
		}
		clear(sum)
		words = words[:0]
		pop := nWide
		for c := 0; c < nc; c++ {
			if x := chunkAt(cur, c); x != 0 {
				sum[c>>6] |= 1 << (c & 63)
				words = append(words, x)
				pop += bits.OnesCount64(uint64(x))
			}
		}
		weight += float64(pop)
		dense += float64(pop) * float64(pop)
		rec := -1
		for _, r := range seen[h] {
			off := int(cl.recs[r])
			if slices.Equal(cl.recs[r+1:r+1+sw], sum) && slices.Equal(cl.data[off:off+len(words)], words) {
				rec = r
				break
			}
		}
		if rec < 0 || rec != last {
			off := len(cl.data)
			if rec >= 0 {
				off = int(cl.recs[rec])
			} else {
				cl.data = append(cl.data, words...)
			}
			r := len(cl.recs)
			cl.recs = append(cl.recs, uint64(off))
			cl.recs = append(cl.recs, sum...)
			if rec < 0 {
				seen[h] = append(seen[h], r)
			}
			bf.starts = append(bf.starts, uint32(at))
			last = r
			if rec >= 0 {
				last = rec
			}
		}
		if j == len(ev) {
			break
		}
		at = ev[j].pos
	}
	if weight > 0 {
		bf.density = dense / weight / float64(len(sets))
	}
	bf.buildTop(maxKey)
	return bf
}

// buildTop sizes the top table: the fewest index bits (at least one per
// interval, at most 16) for which no window holds more than maxWindow
// intervals, as rule sets cluster their keys.
func (fi *fieldIndex) buildTop(maxKey uint32) {
	const maxWindow = 4
	keyBits := bits.Len32(maxKey)
	for tableBits := min(bits.Len(uint(len(fi.starts))), keyBits); ; tableBits++ {
		fi.shift = uint8(keyBits - tableBits)
		fi.top = make([]uint32, int(uint64(maxKey)>>fi.shift)+2)
		widest, j := uint32(0), 0
		for t := range fi.top {
			k := uint64(t) << fi.shift
			for j+1 < len(fi.starts) && uint64(fi.starts[j+1]) <= k {
				j++
			}
			fi.top[t] = uint32(j)
			if t > 0 {
				widest = max(widest, fi.top[t]-fi.top[t-1])
			}
		}
		if widest <= maxWindow || tableBits >= min(16, keyBits) {
			return
		}
	}
}

// constrained reports whether any rule's set of f is not every key.
func constrained(f fieldID, cons []ruleCons) bool {
	for i := range cons {
		if !cons[i].sets[f].all {
			return true
		}
	}
	return false
}

// intField indexes integer field f.
func (b *bitmapBuilder) intField(f fieldID, cons []ruleCons) (builtField, bool) {
	if !constrained(f, cons) {
		return builtField{}, false
	}
	sets := make([]keySet, len(cons))
	for i := range cons {
		sets[i] = cons[i].sets[f]
	}
	return b.field(f, sets, fieldMax[f]), true
}

// nameBound is one end of an interval of device names: a name, or past
// every name.
type nameBound struct {
	name string
	inf  bool
}

// ifaceBounds returns the device names ifaceMatch accepts for pattern i
// (before its inversion) as [lo, hi): an exact name is [n, n+"\x00"), a
// wildcard the names with its prefix; all reports no constraint.
func ifaceBounds(i Iface) (lo, hi nameBound, all bool) {
	if i.Wild {
		p := []byte(i.Name)
		for len(p) > 0 && p[len(p)-1] == 0xff {
			p = p[:len(p)-1]
		}
		if i.Name == "" {
			return nameBound{}, nameBound{}, true
		}
		if len(p) == 0 {
			return nameBound{name: i.Name}, nameBound{inf: true}, false
		}
		p[len(p)-1]++
		return nameBound{name: i.Name}, nameBound{name: string(p)}, false
	}
	if i.Name == "" {
		return nameBound{}, nameBound{}, true
	}
	return nameBound{name: i.Name}, nameBound{name: i.Name + "\x00"}, false
}

// ifaceField indexes the input or output interface: names are ranked
// among the chain's boundaries, and each rule's pattern becomes an
// interval of ranks.
func (b *bitmapBuilder) ifaceField(f fieldID, cons []ruleCons) (builtField, bool) {
	pat := func(rc *ruleCons) Iface {
		if f == fIn {
			return rc.in
		}
		return rc.out
	}
	names := []string{""}
	any := false
	for i := range cons {
		p := pat(&cons[i])
		lo, hi, all := ifaceBounds(p)
		if all && !p.Inv {
			continue
		}
		any = true
		if !all {
			names = append(names, lo.name)
			if !hi.inf {
				names = append(names, hi.name)
			}
		}
	}
	if !any {
		return builtField{}, false
	}
	slices.Sort(names)
	names = slices.Compact(names)
	rank := func(nb nameBound) uint32 {
		if nb.inf {
			return uint32(len(names))
		}
		i, _ := slices.BinarySearch(names, nb.name)
		return uint32(i)
	}
	maxKey := uint32(len(names) - 1)
	sets := make([]keySet, len(cons))
	for i := range cons {
		p := pat(&cons[i])
		lo, hi, all := ifaceBounds(p)
		s := allKeys
		if !all {
			s = oneInterval(rank(lo), rank(hi)-1)
		}
		if p.Inv {
			s = s.complement(maxKey)
		}
		sets[i] = s
	}
	bf := b.field(f, sets, maxKey)
	// Merged intervals keep their first boundary name.
	bf.names = make([]string, len(bf.starts))
	for i, s := range bf.starts {
		bf.names[i] = names[s]
	}
	bf.starts, bf.top = nil, nil
	return bf, true
}
