package engine

import (
	"math"
	"math/bits"
	"slices"
	"strings"
	"unsafe"

	"github.com/qtables/qtables/matchers"
)

// A classifier finds, for one chain and one packet, the first rule at or
// after a given position that may match. It is up to four decision trees
// over the rules' key boxes (HyperSplit), the rules split between them by
// which addresses they leave wide: each inner node compares one field's
// key with a cut, each leaf lists, in chain order, the rules whose box
// meets the leaf's region, with their boxes. A packet walks the trees once
// per chain visit and then resumes through its leaves' lists; see
// design-classifier.md for why this structure and for its measurements.
//
// A rule's box is, per field, the hull of the key set derived in
// classify_rule.go, outside of which evaluating the rule fails without
// effect. A leaf holds every rule whose box meets its region, so the
// candidates for a packet are a superset of the rules that may match it;
// each candidate is evaluated in full by progRule.match, which keeps every
// semantic (unindexed matches, negations, hot-drops, counters, targets)
// exactly as linear evaluation has it.
type classifier struct {
	nRules int
	// tabs are the trees' root tables: the rules are partitioned by the
	// fields in which they are wide (see partition), a tree per part.
	// A tree's root is a table indexed by the top bits of one field's
	// key, each slot a subtree over the rules meeting its slice.
	tabs []rootTable
	// table holds the root tables' slots: the first rule of a subtree
	// << 32 | its root node << 5 | the steps of its walk (half its leaf
	// depth, rounded up). A tree whose slot starts after the best
	// candidate so far is not walked.
	table []uint64
	// nodes holds every subtree, in breadth-first order.
	nodes []treeNode
	// leaves holds every leaf: a header entry whose rule is the leaf's
	// entry count, then its entries in chain order; rest the rest of each
	// entry's box, at the same index.
	leaves []leafEntry
	rest   []leafRest
	// boxFields are the fields of the entries' boxes (leafTag, whose key
	// is always 0, for none).
	boxFields [boxFields]fieldID
	// inNames and outNames rank device names for the interface fields
	// (see ifaceSets); nil when no rule constrains the field.
	inNames, outNames []string
	markMask          uint32
	// l4Keys is set when a field keyed on the transport header (ports,
	// ICMP type, TCP flags) is used, rawKeys when the ICMP type or TCP
	// flags are: then the header is read even for TCP and UDP.
	l4Keys, rawKeys bool
}

// A ruleHit is what an exact hit on a rule does: count the packet and
// return the verdict.
type ruleHit struct {
	counters *counterCell // progRule.counters
	verdict  matchers.Verdict
}

// A treeNode is two levels of a binary decision tree in 16 bytes, so
// that one load and three compares, which do not depend on each other,
// take a packet down two levels.
//
// Field f0 = meta&15 is cut after key cut[0]; below it, keys up to
// cut[0] are cut on field f1 = meta>>4&15 after cut[1], the others on
// f2 = meta>>8&15 after cut[2]; the four grandchildren are at meta>>12 +
// 0..3 (at or under both cuts first). (Storing the last key of the lower
// side rather than the first of the upper saves an instruction a
// compare.) A leaf at index i has every field leafTag, whose key is
// always 0, not past its cuts, and meta>>12 == i: it is its own child.
// cut[0] and cut[1] are where its entries start and end in leaves (after
// their header at leaves[cut[0]-1]).
type treeNode struct {
	cut  [3]uint32
	meta uint32
}

// maxNodes bounds a classifier's nodes: meta holds 20 bits of index.
// The binary trees are held to maxNodes/4 nodes: pairing makes at most
// four treeNodes per inner binary node, plus one per root.
const maxNodes = 1 << 20

// A rootTable is a tree's root: slot base + key(field) >> shift of
// classifier.table holds the subtree of the key's slice.
type rootTable struct {
	base  uint32
	field fieldID
	shift uint8
}

// slot returns the packet's slot of the root table.
func (t *rootTable) slot(table []uint64, keys *keyArray) uint64 {
	return table[t.base+uint32(uint64(keys[t.field&15])>>(t.shift&63))]
}

// Root table shape limits: at most 2^maxRootBits slots a tree, the rules'
// copies into the slices at most rootCopies per rule of the tree.
const (
	maxRootBits = 12
	rootCopies  = 3
)

// A binNode is a node of the binary tree built before it is paired into
// treeNodes: an inner node cuts field link&15 at cut, its children at
// link>>4 (below) and link>>4 + 1; a leaf has link&15 == leafTag and its
// rules' start in leaves at cut.
type binNode struct {
	cut  uint32
	link uint32
}

const leafTag = 15

// keyArray is a packet's key per field, sized so that indexing by a
// node's 4-bit field needs no bounds check.
type keyArray [16]uint32

// packetKeys reads the key of every integer field the classifier uses
// (see fieldKey). The transport keys are the first bytes of the
// transport header, whatever the protocol; for TCP and UDP the view holds
// the ports, decoded from the same bytes, beside the addresses: unless a
// rule constrains the ICMP type or TCP flags, a TCP or UDP packet's own
// bytes, which at 10,000 rules are a cache miss of their own, are not
// read.
func (cl *classifier) packetKeys(c *matchers.Context, src, dst uint32, k *keyArray) {
	p := c.Pkt
	k[fSrc], k[fDst], k[fProto] = src, dst, uint32(p.Proto)
	k[fFrag] = 0
	if p.FragOff() != 0 {
		k[fFrag] = 1
	}
	k[fMark] = c.Mark & cl.markMask
	if p.HasPorts && !cl.rawKeys {
		k[fSport], k[fDport] = uint32(p.SrcPort), uint32(p.DstPort)
		return
	}
	if !cl.l4Keys {
		return
	}
	l4 := p.L4
	sport, dport := uint32(keyShort), uint32(keyShort)
	if len(l4) >= 2 {
		sport = uint32(l4[0])<<8 | uint32(l4[1])
		if len(l4) >= 4 {
			dport = uint32(l4[2])<<8 | uint32(l4[3])
		}
	}
	k[fSport], k[fDport], k[fICMP], k[fFlags] = sport, dport, keyShort, keyNoFlags
	if len(l4) >= 8 {
		k[fICMP] = sport
		if len(l4) >= 14 {
			k[fFlags] = uint32(l4[13])
		}
	}
}

// nameRank returns the rank of device name dev among names: the index of
// the last name not after it (names[0] == "").
func nameRank(names []string, dev string) uint32 {
	lo, hi := 0, len(names)-1
	for lo < hi {
		mid := int(uint(lo+hi+1) >> 1)
		if names[mid] <= dev {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return uint32(lo)
}

// maxTrees bounds the trees of a classifier.
const maxTrees = 4

// boxFields is the number of fields a leaf entry's box holds.
const boxFields = 5

// A leafEntry is a rule in a leaf with its box in up to boxFields fields
// (keys lo[j] to lo[j]+w[j]): a rule whose box misses the packet is passed
// over in the leaf, without reading the rule. Most rules are boxes in
// those fields (a ClassBench rule is exactly one), so most candidates
// offered are rules that match.
//
// The entry holds the first two box fields (the addresses, when rules
// constrain them), which reject most entries scanned; the others are in
// a leafRest at the same index of classifier.rest, read only for an
// entry whose first two fields hold the packet. 20 bytes rather than 44
// an entry: the scan reads fewer cache lines.
//
// ref is the rule's index times two, plus one when the entry is exact:
// the box test alone decides that the rule matches, and evaluation may
// finish from the entry's leafRest.hit without reading the rule (see
// exactEntry). A leaf's
// header entry holds the entry count in ref.
type leafEntry struct {
	ref   int32
	lo, w [2]uint32
}

// leafRest is the rest of a leafEntry's box, fields 2 to boxFields-1,
// and, for an exact entry, what a hit on it does: the entry is read
// anyway for the box test, so a hit touches no other line of the
// classifier (at 10,000 rules, a table of hits by rule was one more
// cache miss a packet).
type leafRest struct {
	lo, w [boxFields - 2]uint32
	hit   ruleHit
}

// holds reports whether the entry's box holds keys k in fields 2 on,
// without a branch per field: w - (k - lo) is negative exactly when k is
// outside.
func (e *leafRest) holds(k *[boxFields]uint32) bool {
	var out uint64
	for j := range boxFields - 2 {
		out |= uint64(e.w[j]) - uint64(k[j+2]-e.lo[j])
	}
	return out>>63 == 0
}

// rowSet is a packet's place in a classifier: its key per field (all)
// and of the box fields (keys) and, per tree walked (bit t of walked),
// its leaf's entries leaves[start:end], of which those before pos are
// below from (the last position asked for) or miss the packet.
type rowSet struct {
	keys   [boxFields]uint32
	from   int32
	walked uint32
	// lead is the tree whose slot starts with the earliest rule, taken
	// first; others is the earliest first rule of the other trees'
	// slots; slots are the packet's root table slots.
	lead, others int32
	slots        [maxTrees]uint64
	at           [maxTrees]leafRange
	all          keyArray
}

type leafRange struct{ start, pos, end int32 }

// lookup reads the packet's keys; first walks the trees.
func (cl *classifier) lookup(c *matchers.Context, src, dst uint32, rows *rowSet) {
	keys := &rows.all
	cl.packetKeys(c, src, dst, keys)
	if cl.inNames != nil {
		keys[fIn] = nameRank(cl.inNames, c.In)
	}
	if cl.outNames != nil {
		keys[fOut] = nameRank(cl.outNames, c.Out)
	}
	bf := &cl.boxFields
	rows.keys = [boxFields]uint32{keys[bf[0]&15], keys[bf[1]&15], keys[bf[2]&15], keys[bf[3]&15], keys[bf[4]&15]}
	rows.from, rows.walked = 0, 0
	lead, low, next := 0, ^uint64(0), ^uint64(0)
	for t := range cl.tabs {
		s := cl.tabs[t].slot(cl.table, keys)
		rows.slots[t&(maxTrees-1)] = s
		if s < low {
			lead, low, next = t, s, low
		} else if s < next {
			next = s
		}
	}
	rows.lead, rows.others = int32(lead), int32(min(next>>32, uint64(cl.nRules)))
}

// first returns the index of the first candidate rule at or after from,
// or the number of rules when there is none, and, when the candidate is
// an exact hit (a rule that matches the packet, see leafEntry), what the
// hit does.
//
// The trees are taken in turn from the one whose slot (for this packet)
// starts with the earliest rule, each walked the first time it is
// needed: a tree whose slot's rules all come after the best candidate
// found so far is not walked (at 10,000 rules most packets walk one
// tree). Positions usually grow between calls, so each tree's scan
// resumes where the last one stopped.
func (cl *classifier) first(rows *rowSet, from int) (int, *ruleHit) {
	leaves, rest, nodes := cl.leaves, cl.rest, cl.nodes
	restart := int32(from) < rows.from
	rows.from = int32(from)
	best, hit := cl.nRules, (*ruleHit)(nil)
	k0, k1 := rows.keys[0], rows.keys[1]
	n := len(cl.tabs)
	for k := range n {
		// The lead tree first, then the others in turn.
		t := int(rows.lead) + k
		if t >= n {
			t -= n
		}
		t &= maxTrees - 1
		at := &rows.at[t]
		i := at.pos
		if rows.walked&(1<<t) == 0 {
			s := rows.slots[t]
			if int(s>>32) >= best {
				continue
			}
			// The walk: s&31 steps down the slot's subtree. A step: x is
			// whether the key of f0 is past cut[0], l and r the same
			// below on either side (cut - key is negative exactly when
			// key > cut), and the grandchild is base + 2x + (x ? r : l),
			// selected by masking.
			keys := &rows.all
			a := uint32(s) >> 5
			for range s & 31 {
				n := &nodes[a]
				m := n.meta
				x := (uint64(n.cut[0]) - uint64(keys[m&15])) >> 63
				l := (uint64(n.cut[1]) - uint64(keys[m>>4&15])) >> 63
				r := (uint64(n.cut[2]) - uint64(keys[m>>8&15])) >> 63
				a = m>>12 + uint32(x<<1|(l^(l^r)&-x))
			}
			leaf := &nodes[a]
			i = int32(leaf.cut[0])
			at.start, at.end = i, int32(leaf.cut[1])
			rows.walked |= 1 << t
		} else if restart {
			i = at.start
		}
		for ; i < at.end; i++ {
			e := &leaves[i]
			r := int(e.ref >> 1)
			if r >= best {
				break
			}
			// Most entries miss the packet in the first two box fields
			// (the addresses, when rules constrain them): a test of
			// those alone, both at once, is cheaper and, failing far
			// more often than not, well predicted.
			if (uint64(e.w[0])-uint64(k0-e.lo[0]))|(uint64(e.w[1])-uint64(k1-e.lo[1])) >= 1<<63 {
				continue
			}
			if r >= from && rest[i].holds(&rows.keys) {
				best, hit = r, nil
				if e.ref&1 != 0 {
					hit = &rest[i].hit
				}
				break
			}
		}
		at.pos = i
		// The lead tree's candidate comes before every rule of the
		// others' slots: they need not be looked at.
		if k == 0 && best <= int(rows.others) {
			break
		}
	}
	return best, hit
}

// size returns the bytes the classifier holds, for CompiledBytes.
func (cl *classifier) size() int {
	n := int(unsafe.Sizeof(*cl)) + cap(cl.tabs)*int(unsafe.Sizeof(rootTable{})) + cap(cl.table)*8 + cap(cl.nodes)*int(unsafe.Sizeof(treeNode{})) + cap(cl.leaves)*int(unsafe.Sizeof(leafEntry{})) + cap(cl.rest)*int(unsafe.Sizeof(leafRest{}))
	for _, names := range [][]string{cl.inNames, cl.outNames} {
		n += cap(names) * int(unsafe.Sizeof(""))
		for _, s := range names {
			n += len(s)
		}
	}
	return n
}

// deriveChain derives what may be indexed of each rule of a chain and
// records in each progRule where indexing stopped.
func deriveChain(rules []*Rule, prog []progRule, mcache map[string]matchCons) []ruleCons {
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
	return cons
}

// Tree shape limits. A node of at most leafRules rules is a leaf, and so
// is a node three levels below the depth a balanced tree of the chain
// would have (the walk's steps). A tree stops splitting (larger leaves)
// when its entries would exceed entriesPerRule per rule of the tree plus
// minEntries/maxTrees: that bounds memory, nodes and compile time where
// wildcard rules replicate into most regions (see design-classifier.md).
const (
	leafRules      = 8
	entriesPerRule = 32
	minEntries     = 1 << 14
	extraDepth     = 3
)

// buildClassifier builds the tree over rules (compiled as prog) with the
// derived constraints cons, or returns nil when no rule constrains an
// indexable field (every rule would be a candidate).
func buildClassifier(cons []ruleCons, prog []progRule) *classifier {
	n := len(cons)
	cl := &classifier{nRules: n}
	cl.markMask = chooseMarkMask(cons)
	b := &treeBuilder{cl: cl, boxes: make([][numFields]ival, n)}
	keep := make([]bool, n)
	for i := range keep {
		keep[i] = true
	}
	var sets [numFields][]keySet
	for f := fieldID(0); f < numFields; f++ {
		switch f {
		case fIn, fOut:
			var names []string
			names, sets[f] = ifaceSets(f, cons)
			if f == fIn {
				cl.inNames = names
			} else {
				cl.outNames = names
			}
			b.maxKey[f] = uint32(max(len(names), 1) - 1)
		case fMark:
			sets[f] = make([]keySet, n)
			for i := range cons {
				sets[f][i] = markSet(cons[i].marks, cl.markMask)
			}
			b.maxKey[f] = fieldMax[f]
		default:
			sets[f] = make([]keySet, n)
			for i := range cons {
				sets[f][i] = cons[i].sets[f]
			}
			b.maxKey[f] = fieldMax[f]
		}
		if sets[f] == nil {
			continue
		}
		used := false
		for i, s := range sets[f] {
			switch {
			case s.all:
				b.boxes[i][f] = ival{0, b.maxKey[f]}
			case len(s.iv) == 0:
				keep[i] = false // never matches: in no leaf
			default:
				b.boxes[i][f] = ival{s.iv[0].lo, s.iv[len(s.iv)-1].hi}
				used = true
			}
		}
		if used {
			b.fields = append(b.fields, f)
		} else {
			b.maxKey[f] = 0
			for i := range b.boxes {
				b.boxes[i][f] = ival{}
			}
		}
	}
	if len(b.fields) == 0 {
		return nil
	}
	for _, f := range b.fields {
		cl.l4Keys = cl.l4Keys || f == fSport || f == fDport || f == fICMP || f == fFlags
		cl.rawKeys = cl.rawKeys || f == fICMP || f == fFlags
	}
	if !slices.Contains(b.fields, fIn) {
		cl.inNames = nil
	}
	if !slices.Contains(b.fields, fOut) {
		cl.outNames = nil
	}
	root := make([]int32, 0, n)
	for i, k := range keep {
		if k {
			root = append(root, int32(i))
		}
	}
	// The boxes hold the addresses and ports first, the fields rules
	// most often constrain.
	for j := range cl.boxFields {
		cl.boxFields[j] = leafTag
	}
	j := 0
	for _, f := range []fieldID{fSrc, fDst, fSport, fDport, fProto, fICMP, fFlags, fIn, fOut, fMark, fFrag} {
		if j < boxFields && slices.Contains(b.fields, f) {
			cl.boxFields[j] = f
			j++
		}
	}
	b.exact = make([]bool, n)
	for i := range cons {
		if b.exact[i] = keep[i] && exactEntry(cons, i, &sets, &cl.boxFields); b.exact[i] {
			if b.hits == nil {
				b.hits = make([]ruleHit, n)
			}
			b.hits[i] = ruleHit{counters: prog[i].counters, verdict: prog[i].verdict}
		}
	}
	parts := b.partition(root)
	// Each tree's root table: the slices' rule lists, a subtree per
	// distinct list (a subtree sends a rule down by its box alone, so
	// it serves any slice with the same rules).
	var binRoots []uint32 // per distinct subtree
	var depths []int
	var firsts []uint64 // per distinct subtree, its first rule
	var slots []int32   // per table slot, the index in binRoots
	for _, part := range parts {
		f, shift := b.chooseRoot(part)
		cl.tabs = append(cl.tabs, rootTable{base: uint32(len(slots)), field: f, shift: uint8(shift)})
		lists := b.slices(part, f, shift)
		b.load, b.budget = 0, entriesPerRule*len(part)+minEntries/maxTrees
		seen := map[string]int32{}
		for i, l := range lists {
			var key string
			if len(l) > 0 {
				key = string(unsafe.Slice((*byte)(unsafe.Pointer(&l[0])), 4*len(l)))
			}
			if j, ok := seen[key]; ok {
				slots = append(slots, j)
				continue
			}
			var region [numFields]ival
			for g := range region {
				region[g] = ival{0, b.maxKey[g]}
			}
			region[f] = ival{uint32(i) << shift, min(uint32((uint64(i)+1)<<shift-1), b.maxKey[f])}
			j := int32(len(binRoots))
			seen[key] = j
			slots = append(slots, j)
			binRoots = append(binRoots, uint32(len(b.bin)))
			depths = append(depths, b.build(l, region))
			firsts = append(firsts, uint64(n))
			if len(l) > 0 {
				firsts[j] = uint64(slices.Min(l))
			}
		}
	}
	nodes := b.pair(binRoots)
	cl.table = make([]uint64, len(slots))
	for i, j := range slots {
		cl.table[i] = firsts[j]<<32 | uint64(nodes[j]<<5|uint32(depths[j]+1)/2)
	}
	cl.leaves, cl.rest = slices.Clip(cl.leaves), slices.Clip(cl.rest)
	return cl
}

// exactEntry reports whether rule i's leaf entries may be exact: the rule
// is exact (ruleCons.exact: its sets are its match, its target a plain
// verdict) and each field it constrains is a single interval, so that
// its hull, the box, adds nothing, held in the leaf boxes, whose fields
// are boxFields. sets are the chain's key sets per field and rule (nil
// for a field no rule constrains).
func exactEntry(cons []ruleCons, i int, sets *[numFields][]keySet, boxFields *[boxFields]fieldID) bool {
	if rc := &cons[i]; !rc.exact || len(rc.marks) > 0 {
		return false
	}
	for f := range sets {
		if sets[f] == nil {
			continue
		}
		s := sets[f][i]
		if s.all {
			continue
		}
		if len(s.iv) != 1 || !slices.Contains(boxFields[:], fieldID(f)) {
			return false
		}
	}
	return true
}

// treeBuilder builds a classifier's tree breadth first, so that the
// nodes near the root are adjacent and an entry budget, when it runs out,
// leaves the remaining nodes of every branch as leaves alike.
type treeBuilder struct {
	cl     *classifier
	boxes  [][numFields]ival // rule i's hull per field
	maxKey [numFields]uint32
	fields []fieldID // the fields some rule constrains
	// scratch for bestCut
	los, his []uint64
	exact    []bool    // per rule: its entries are exact (exactEntry)
	hits     []ruleHit // per exact rule, its leafRest.hit
	bin      []binNode
	// load counts the entries, headers included, of the current tree's
	// leaves built and of its nodes pending, were they leaves; budget
	// bounds it (see build).
	load, budget int
}

// treeTask is a node to build: its rules and region.
type treeTask struct {
	node   int32
	depth  int
	rules  []int32
	region [numFields]ival
}

// build builds the binary subtree over root (rules meeting region) at
// the end of b.bin and returns its greatest leaf depth. A node is split
// while it has more than leafRules rules, is less than extraDepth levels
// below a balanced tree's depth, and the tree's load (its entries,
// headers included, were its pending nodes leaves) stays within budget:
// that bounds the leaves' size and, as every leaf has a header, the
// nodes' number.
func (b *treeBuilder) build(root []int32, region [numFields]ival) int {
	cl := b.cl
	b.load += len(root) + 1
	maxDepth := bits.Len(uint(len(root)/leafRules)) + extraDepth
	depth := 0
	queue := []treeTask{{node: int32(len(b.bin)), rules: root, region: region}}
	b.bin = append(b.bin, binNode{})
	for len(queue) > 0 {
		t := queue[0]
		queue[0] = treeTask{}
		queue = queue[1:]
		if len(t.rules) > leafRules && t.depth < maxDepth {
			if f, cut, nl, nr, ok := b.bestCut(t.rules, &t.region); ok && b.load+nl+nr+1-len(t.rules) <= b.budget && len(b.bin)+2 <= maxNodes/4 {
				b.load += nl + nr + 1 - len(t.rules)
				left := make([]int32, 0, nl)
				right := make([]int32, 0, nr)
				for _, r := range t.rules {
					box := b.boxes[r][f]
					if box.lo < cut {
						left = append(left, r)
					}
					if box.hi >= cut {
						right = append(right, r)
					}
				}
				child := len(b.bin)
				b.bin[t.node] = binNode{cut: cut, link: uint32(child)<<4 | uint32(f)}
				b.bin = append(b.bin, binNode{}, binNode{})
				lt := treeTask{node: int32(child), depth: t.depth + 1, rules: left, region: t.region}
				lt.region[f].hi = cut - 1
				rt := treeTask{node: int32(child + 1), depth: t.depth + 1, rules: right, region: t.region}
				rt.region[f].lo = cut
				queue = append(queue, lt, rt)
				continue
			}
		}
		cl.leaves = append(cl.leaves, leafEntry{ref: int32(len(t.rules))})
		cl.rest = append(cl.rest, leafRest{})
		b.bin[t.node] = binNode{cut: uint32(len(cl.leaves)), link: leafTag}
		for _, r := range t.rules {
			e := leafEntry{ref: r << 1}
			var er leafRest
			if b.exact[r] {
				e.ref |= 1
				er.hit = b.hits[r]
			}
			for j, f := range cl.boxFields {
				if f == leafTag {
					continue
				}
				box := b.boxes[r][f]
				if j < 2 {
					e.lo[j], e.w[j] = box.lo, box.hi-box.lo
				} else {
					er.lo[j-2], er.w[j-2] = box.lo, box.hi-box.lo
				}
			}
			cl.leaves = append(cl.leaves, e)
			cl.rest = append(cl.rest, er)
		}
		depth = max(depth, t.depth)
	}
	return depth
}

// chooseRoot picks the field and shift of a root table for rules: the
// slices of key >> shift that leave the rules' subtrees shallowest, by
// the rules' mean of log2 of their slice's rules (a packet's walk is as
// long as the subtree of its slice), among those copying each rule into
// at most rootCopies slices on average. shift 32 (one slot) when no
// table saves two levels.
func (b *treeBuilder) chooseRoot(rules []int32) (fieldID, int) {
	cost := func(n int) float64 { return math.Log2(float64(max(n, leafRules)) / leafRules) }
	bestF, bestShift := fSrc, 32
	best := cost(len(rules)) - 2
	var count []int32
	for _, f := range []fieldID{fSrc, fDst, fSport, fDport} {
		if !slices.Contains(b.fields, f) {
			continue
		}
		width := bits.Len32(b.maxKey[f])
		for k := 2; k <= maxRootBits && k <= width; k++ {
			shift := width - k
			size := int(b.maxKey[f]>>shift) + 1
			count = slices.Grow(count[:0], size+1)[:size+1]
			clear(count)
			copies := 0
			for _, r := range rules {
				box := b.boxes[r][f]
				lo, hi := int(box.lo>>shift), int(box.hi>>shift)
				count[lo]++
				count[hi+1]--
				copies += hi - lo + 1
			}
			if copies > rootCopies*len(rules)+size {
				break
			}
			var sum float64
			n := int32(0)
			for _, c := range count[:size] {
				n += c
				sum += float64(n) * cost(int(n))
			}
			if c := sum / float64(copies); c < best {
				best, bestF, bestShift = c, f, shift
			}
		}
	}
	return bestF, bestShift
}

// slices returns, per slot of the root table on field f at shift, the
// rules (in chain order) whose box meets the slot's slice.
func (b *treeBuilder) slices(rules []int32, f fieldID, shift int) [][]int32 {
	lists := make([][]int32, int(uint64(b.maxKey[f])>>shift)+1)
	for _, r := range rules {
		box := b.boxes[r][f]
		for i := uint64(box.lo) >> shift; i <= uint64(box.hi)>>shift; i++ {
			lists[i] = append(lists[i], r)
		}
	}
	return lists
}

// pair lays the binary trees at roots out as treeNodes, two levels each,
// breadth first, and returns the root nodes. A leaf below an inner node
// on one side takes both of that side's grandchild slots (the second is
// never reached).
func (b *treeBuilder) pair(roots []uint32) []uint32 {
	cl := b.cl
	type job struct{ bin, node uint32 }
	var queue []job
	var nodes []uint32
	for _, r := range roots {
		nodes = append(nodes, uint32(len(cl.nodes)))
		queue = append(queue, job{r, uint32(len(cl.nodes))})
		cl.nodes = append(cl.nodes, treeNode{})
	}
	leaf := func(i uint32, start uint32) treeNode {
		end := start + uint32(cl.leaves[start-1].ref)
		return treeNode{cut: [3]uint32{start, end, start}, meta: i<<12 | leafTag<<8 | leafTag<<4 | leafTag}
	}
	for len(queue) > 0 {
		j := queue[0]
		queue = queue[1:]
		p := b.bin[j.bin]
		if p.link&15 == leafTag {
			cl.nodes[j.node] = leaf(j.node, p.cut)
			continue
		}
		base := uint32(len(cl.nodes))
		cl.nodes = append(cl.nodes, treeNode{}, treeNode{}, treeNode{}, treeNode{})
		n := treeNode{meta: base<<12 | p.link&15}
		n.cut[0] = p.cut - 1
		for side := range 2 {
			c := b.bin[p.link>>4+uint32(side)]
			slot := base + uint32(2*side)
			if c.link&15 == leafTag {
				n.meta |= leafTag << (4 + 4*side)
				queue = append(queue, job{p.link>>4 + uint32(side), slot}, job{p.link>>4 + uint32(side), slot + 1})
				continue
			}
			n.meta |= (c.link & 15) << (4 + 4*side)
			n.cut[1+side] = c.cut - 1
			queue = append(queue, job{c.link >> 4, slot}, job{c.link>>4 + 1, slot + 1})
		}
		cl.nodes[j.node] = n
	}
	cl.nodes = slices.Clip(cl.nodes)
	return nodes
}

// partition splits rules (in chain order) into at most maxTrees parts, so
// that a tree need not copy a rule into every region of an address field
// in which the rule is wide while the others are narrow (the separable
// trees of EffiCuts; firewall sets mix "any" and host addresses). A rule
// is wide in an address when its box holds more than 1/256th of the
// space (a prefix shorter than /8). The largest classes by wide addresses
// get a tree each; a rule goes to the tree of the fewest wide fields that
// include its own, except that only a small class goes to the tree wide
// in both addresses (the generated fw set: 994 rules wide in the
// destination alone merged there made its leaves 2.6 times as long).
// Classing by the other fields too was measured: more trees to walk for
// about the same leaves (design-classifier.md).
func (b *treeBuilder) partition(rules []int32) [][]int32 {
	const (
		wideBoth   = 1<<fSrc | 1<<fDst
		smallClass = 8 * leafRules
	)
	masks := make([]uint16, len(rules))
	count := map[uint16]int{}
	for i, r := range rules {
		var m uint16
		for _, f := range []fieldID{fSrc, fDst} {
			if box := b.boxes[r][f]; box.hi-box.lo >= 1<<24 {
				m |= 1 << f
			}
		}
		masks[i] = m
		count[m]++
	}
	classes := make([]uint16, 0, len(count))
	for m := range count {
		classes = append(classes, m)
	}
	slices.SortFunc(classes, func(a, b uint16) int {
		if count[a] != count[b] {
			return count[b] - count[a]
		}
		return int(a) - int(b)
	})
	covered := func(m uint16, trees []uint16) int {
		best := -1
		for t, tm := range trees {
			// A tree wide in both addresses cannot cut on either
			// without copying all its rules: rules narrow in an address
			// would only lengthen its leaves. A class of a few leaves'
			// worth goes there all the same, rather than a tree of its
			// own that packets would walk.
			if tm == wideBoth && m != wideBoth && count[m] > smallClass {
				continue
			}
			if m&^tm == 0 && (best < 0 || bits.OnesCount16(tm) < bits.OnesCount16(trees[best])) {
				best = t
			}
		}
		return best
	}
	// Two wide bits make at most four classes: maxTrees.
	var trees []uint16
	for _, m := range classes {
		if covered(m, trees) < 0 {
			trees = append(trees, m)
		}
	}
	parts := make([][]int32, len(trees))
	for i, r := range rules {
		t := covered(masks[i], trees)
		parts[t] = append(parts[t], r)
	}
	return parts
}

// bestCut chooses the field and cut that split rules (all meeting region)
// into the smallest larger half, the fewest copies on a tie: a rule goes
// left when its box has keys below the cut, right when it has keys at or
// above it. ok is false when no cut makes both halves smaller.
func (b *treeBuilder) bestCut(rules []int32, region *[numFields]ival) (f fieldID, cut uint32, nl, nr int, ok bool) {
	n := len(rules)
	bestMax, bestSum := n, 2*n+1
	for _, fld := range b.fields {
		reg := region[fld]
		if reg.lo == reg.hi {
			continue
		}
		// Rules spanning the region go both ways whatever the cut.
		los, his := b.los[:0], b.his[:0]
		for _, r := range rules {
			box := b.boxes[r][fld]
			lo, hi := max(box.lo, reg.lo), min(box.hi, reg.hi)
			if lo == reg.lo && hi == reg.hi {
				continue
			}
			los = append(los, uint64(lo))
			his = append(his, uint64(hi)+1)
		}
		b.los, b.his = los, his
		m := len(los)
		both := n - m
		if m == 0 || both >= bestMax {
			continue
		}
		slices.Sort(los)
		slices.Sort(his)
		// Candidate cuts are the boxes' starts and ends+1 inside the
		// region; i counts starts below c, j ends+1 at or below c.
		i, j := 0, 0
		for i < m || j < m {
			c := uint64(1) << 33
			if i < m {
				c = los[i]
			}
			if j < m && his[j] < c {
				c = his[j]
			}
			l := both + i
			for i < m && los[i] == c {
				i++
			}
			for j < m && his[j] == c {
				j++
			}
			r := both + m - j
			if c <= uint64(reg.lo) || c > uint64(reg.hi) {
				continue
			}
			if mx, s := max(l, r), l+r; mx < bestMax || mx == bestMax && s < bestSum {
				bestMax, bestSum = mx, s
				f, cut, nl, nr, ok = fld, uint32(c), l, r, true
			}
		}
	}
	return f, cut, nl, nr, ok
}

// ifaceSets ranks the device names that bound the chain's -i or -o
// patterns (f is fIn or fOut) and returns each rule's pattern as a set of
// ranks: a device's key is the rank of the last boundary not after its
// name (see nameRank). names is nil when no rule constrains the field.
func ifaceSets(f fieldID, cons []ruleCons) (names []string, sets []keySet) {
	pat := func(rc *ruleCons) Iface {
		if f == fIn {
			return rc.in
		}
		return rc.out
	}
	names = []string{""}
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
		return nil, nil
	}
	slices.Sort(names)
	names = slices.Clip(slices.Compact(names))
	rank := func(nb nameBound) uint32 {
		if nb.inf {
			return uint32(len(names))
		}
		i, _ := slices.BinarySearch(names, nb.name)
		return uint32(i)
	}
	maxKey := uint32(len(names) - 1)
	sets = make([]keySet, len(cons))
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
	return names, sets
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
