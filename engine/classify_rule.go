package engine

import (
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/qtables/qtables/matchers"
)

// This file derives what the classifier may index of one rule: for each
// header field a set of keys outside of which evaluating the rule is
// guaranteed to fail without any side effect. The classifier then offers a
// rule as a candidate only for packets inside every set, and the candidate
// is checked by the ordinary evaluation (progRule.match), so the sets may be
// larger than the rule's true match set but never smaller where the rule
// could match, hot-drop a packet, or change any state.

// fieldID names a packet field the classifier can index. Keys are
// uint32s; see fieldKey for how each is read from a packet.
type fieldID uint8

const (
	fSrc   fieldID = iota // source address
	fDst                  // destination address
	fIn                   // input interface (rank among the chain's names)
	fOut                  // output interface
	fProto                // IPv4 protocol
	fFrag                 // 0: unfragmented or first fragment, 1: later fragment
	fSport                // transport bytes 0-1; keyShort when fewer than 2 bytes
	fDport                // transport bytes 2-3; keyShort when fewer than 4 bytes
	fFlags                // transport byte 13; 256 when fewer than 14 bytes
	fICMP                 // transport bytes 0-1 (type<<8|code); keyShort when fewer than 8
	fMark                 // packet mark AND the chain's mark mask
	numFields
)

var fieldNames = [numFields]string{"src", "dst", "in", "out", "proto", "frag", "sport", "dport", "flags", "icmp", "mark"}

func (f fieldID) String() string { return fieldNames[f] }

// keyShort is the key of a port or ICMP field whose bytes are missing.
const keyShort = 1 << 16

// keyNoFlags is the flags key of a transport header shorter than 14 bytes.
const keyNoFlags = 256

// fieldMax is the largest key of each integer field. The interface fields
// are ranks computed per chain.
var fieldMax = [numFields]uint32{
	fSrc: 0xffffffff, fDst: 0xffffffff, fProto: 0xff, fFrag: 1,
	fSport: keyShort, fDport: keyShort, fFlags: keyNoFlags, fICMP: keyShort, fMark: 0xffffffff,
}

// fieldKey reads the key of integer field f from the packet, exactly from
// the bytes the matches read (c.Pkt.L4 whatever the protocol).
func fieldKey(f fieldID, c *matchers.Context, src, dst, markMask uint32) uint32 {
	p := c.Pkt
	switch f {
	case fSrc:
		return src
	case fDst:
		return dst
	case fProto:
		return uint32(p.Proto)
	case fFrag:
		if p.FragOff() != 0 {
			return 1
		}
		return 0
	case fSport:
		if len(p.L4) < 2 {
			return keyShort
		}
		return uint32(p.L4[0])<<8 | uint32(p.L4[1])
	case fDport:
		if len(p.L4) < 4 {
			return keyShort
		}
		return uint32(p.L4[2])<<8 | uint32(p.L4[3])
	case fFlags:
		if len(p.L4) < 14 {
			return keyNoFlags
		}
		return uint32(p.L4[13])
	case fICMP:
		if len(p.L4) < 8 {
			return keyShort
		}
		return uint32(p.L4[0])<<8 | uint32(p.L4[1])
	case fMark:
		return c.Mark & markMask
	}
	return 0
}

// ival is an inclusive interval of keys.
type ival struct{ lo, hi uint32 }

// keySet is a set of keys of one field: every key (all), or the sorted,
// disjoint, non-adjacent intervals iv (none when empty).
type keySet struct {
	all bool
	iv  []ival
}

var allKeys = keySet{all: true}

func oneInterval(lo, hi uint32) keySet {
	if lo > hi {
		return keySet{}
	}
	return keySet{iv: []ival{{lo, hi}}}
}

// normalize sorts and merges overlapping or adjacent intervals.
func normalize(iv []ival) []ival {
	slices.SortFunc(iv, func(a, b ival) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	out := iv[:0]
	for _, x := range iv {
		if x.lo > x.hi {
			continue
		}
		if n := len(out); n > 0 && (out[n-1].hi == ^uint32(0) || x.lo <= out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	return out
}

// complement returns the keys of [0, maxKey] that are not in s.
func (s keySet) complement(maxKey uint32) keySet {
	if s.all {
		return keySet{}
	}
	var out []ival
	next := uint32(0)
	done := false
	for _, x := range s.iv {
		if x.lo > next {
			out = append(out, ival{next, x.lo - 1})
		}
		if x.hi >= maxKey {
			done = true
			break
		}
		next = x.hi + 1
	}
	if !done {
		out = append(out, ival{next, maxKey})
	}
	if len(out) == 1 && out[0] == (ival{0, maxKey}) {
		return allKeys
	}
	return keySet{iv: out}
}

// intersect returns the keys in both s and t.
func (s keySet) intersect(t keySet) keySet {
	if s.all {
		return t
	}
	if t.all {
		return s
	}
	var out []ival
	i, j := 0, 0
	for i < len(s.iv) && j < len(t.iv) {
		a, b := s.iv[i], t.iv[j]
		lo, hi := max(a.lo, b.lo), min(a.hi, b.hi)
		if lo <= hi {
			out = append(out, ival{lo, hi})
		}
		if a.hi < b.hi {
			i++
		} else {
			j++
		}
	}
	return keySet{iv: out}
}

// union returns the keys in s or t.
func (s keySet) union(t keySet) keySet {
	if s.all || t.all {
		return allKeys
	}
	iv := append(append([]ival(nil), s.iv...), t.iv...)
	return keySet{iv: normalize(iv)}
}

func (s keySet) contains(k uint32) bool {
	if s.all {
		return true
	}
	for _, x := range s.iv {
		if k >= x.lo && k <= x.hi {
			return true
		}
	}
	return false
}

func (s keySet) empty() bool { return !s.all && len(s.iv) == 0 }

// markCons is one mark match the classifier may index when its mask is the
// chain's mark mask.
type markCons struct {
	value, mask uint32
	inv         bool
}

// ruleCons is what the classifier may index of one rule.
type ruleCons struct {
	sets    [numFields]keySet // fIn and fOut unused: see in, out
	in, out Iface
	marks   []markCons
	// stop is the index of the first match not indexed: indexing ends at
	// a stateful match or after a match that may hot-drop. A packet
	// outside the sets fails, without effect, at a part before it.
	stop int
	// exact is set when the sets are not only a superset: the rule
	// matches, without any other effect, exactly the packets inside
	// every set, and its target is a plain verdict (see exactHeader).
	exact bool
}

// matchClass says how a match may be treated; see deriveMatch.
type matchClass uint8

const (
	// classPure: evaluating the match has no effect beyond its answer,
	// and the keys returned hold every packet it matches.
	classPure matchClass = iota
	// classHotdrop: the match may set c.Hotdrop; the keys hold every
	// packet it matches or hot-drops. Nothing after it may be indexed,
	// because a hot-drop ends evaluation before the later parts are read.
	classHotdrop
	// classStateful: evaluating the match changes state (a token bucket)
	// or its behaviour is unknown; neither it nor anything after it may
	// be indexed, and a rule may not be skipped past it.
	classStateful
)

// matchCons is the derivation of one match instance.
type matchCons struct {
	class matchClass
	sets  [numFields]keySet
	marks []markCons
	// exact is set (for a pure match) when the match accepts exactly the
	// packets whose keys are in every set: not a superset. probeMatch
	// checks it; a rule whose every part is exact may be decided by the
	// classifier alone (see leafRest.hit).
	exact bool
}

// pureMatches are the matches that read the packet (or the clock) and
// nothing else but whose conditions the classifier does not index; they
// are checked on the candidate.
var pureMatches = map[string]bool{
	"comment": true, "length": true, "ttl": true, "pkttype": true, "string": true, "time": true,
}

// statelessMatches are the matches whose evaluation changes nothing but
// c.Hotdrop: the verifier may evaluate a packet twice through them.
var statelessMatches = map[string]bool{
	"comment": true, "length": true, "ttl": true, "pkttype": true, "string": true, "time": true,
	"tcp": true, "udp": true, "icmp": true, "multiport": true, "mark": true, "iprange": true,
}

// addrSet is the key set of an -s/-d part: a prefix is an interval; a
// non-contiguous mask is widened to its leading prefix (a superset), which
// cannot be complemented, so "! -s a/m" with such a mask indexes nothing.
func addrSet(a Addr) keySet {
	if a.Mask == 0 {
		if a.Inv {
			return keySet{} // "! -s 0/0" matches nothing
		}
		return allKeys
	}
	lead := ^uint32(0) << (32 - bits.LeadingZeros32(^a.Mask)) // 0 when the mask's top bit is clear
	if lead != a.Mask {
		if a.Inv {
			return allKeys
		}
		if a.Addr&^a.Mask != 0 {
			return keySet{} // the comparison can never hold
		}
		return oneInterval(a.Addr&lead, a.Addr&lead|^lead)
	}
	var s keySet
	if a.Addr&^a.Mask == 0 {
		s = oneInterval(a.Addr, a.Addr|^a.Mask)
	}
	if a.Inv {
		return s.complement(0xffffffff)
	}
	return s
}

// addrExact reports whether addrSet(a) is exactly the addresses the -s/-d
// part accepts: a prefix, inverted or not (a non-contiguous mask is
// widened to a superset).
func addrExact(a Addr) bool {
	lead := ^uint32(0) << (32 - bits.LeadingZeros32(^a.Mask))
	return a.Mask == 0 || lead == a.Mask
}

// deriveRule computes what the classifier may index of r; derive caches
// match derivations by their printed form.
func deriveRule(r *Rule, derive func(MatchInstance, *Rule) matchCons) ruleCons {
	rc := ruleCons{stop: len(r.Matches)}
	for i := range rc.sets {
		rc.sets[i] = allKeys
	}
	rc.sets[fSrc] = addrSet(r.Src)
	rc.sets[fDst] = addrSet(r.Dst)
	rc.in, rc.out = r.In, r.Out
	if r.Proto != 0 {
		s := oneInterval(uint32(r.Proto), uint32(r.Proto))
		if r.InvProto {
			s = s.complement(0xff)
		}
		rc.sets[fProto] = s
	}
	switch r.Frag {
	case FragNonFirst:
		rc.sets[fFrag] = oneInterval(1, 1)
	case FragNotFrag:
		rc.sets[fFrag] = oneInterval(0, 0)
	}
	exact := exactHeader(r)
	for i, mi := range r.Matches {
		mc := derive(mi, r)
		exact = exact && mc.class == classPure && mc.exact && len(mc.marks) == 0
		if mc.class == classStateful {
			rc.stop = i
			break
		}
		for f := range mc.sets {
			if !mc.sets[f].all {
				rc.sets[f] = rc.sets[f].intersect(mc.sets[f])
			}
		}
		rc.marks = append(rc.marks, mc.marks...)
		if mc.class == classHotdrop {
			rc.stop = i + 1
			break
		}
	}
	// A rule is exact when its header is and every match is pure and
	// exact (a pure match never ends indexing early).
	rc.exact = exact
	return rc
}

// exactHeader reports whether rule r's header parts are exactly their
// derived sets and its target does nothing but return a verdict: no
// interface (not in the leaf boxes), a prefix per address, a plain
// verdict. deriveRule adds that every match be pure and exact (native
// tcp/udp ports and flags, iprange, comment); the classifier then still
// requires each constrained field to be one interval held in its leaf
// boxes (exactEntry).
func exactHeader(r *Rule) bool {
	return r.Target.Kind == TargetVerdict && r.In == (Iface{}) && r.Out == (Iface{}) &&
		addrExact(r.Src) && addrExact(r.Dst)
}

// deriveMatch reads what may be indexed of one match from its name and its
// iptables-save form, which matchers pins against the installed iptables.
// Anything it does not recognise is stateful: correct, merely unindexed.
// The derivation is then probed on packets (see probeMatch) before use.
func deriveMatch(mi MatchInstance, r *Rule) matchCons {
	mc := matchCons{class: classStateful}
	for i := range mc.sets {
		mc.sets[i] = allKeys
	}
	if pureMatches[mi.Name] {
		mc.class = classPure
		mc.exact = mi.Name == "comment" // matches every packet
		return mc
	}
	var b strings.Builder
	mi.Match.Save(&b)
	opts, ok := saveOptions(b.String())
	if !ok {
		return mc
	}
	switch mi.Name {
	case "tcp", "udp":
		return derivePorts(mi.Name, opts, mc)
	case "icmp":
		return deriveICMP(opts, mc)
	case "multiport":
		return deriveMultiport(opts, mc)
	case "mark":
		if len(opts) != 1 || opts[0].name != "mark" || len(opts[0].args) != 1 {
			return mc
		}
		v, m, err := matchers.ParseMark(opts[0].args[0])
		if err != nil {
			return mc
		}
		mc.class = classPure
		mc.marks = []markCons{{value: v, mask: m, inv: opts[0].inv}}
	case "iprange":
		for _, o := range opts {
			if len(o.args) != 1 {
				return mc
			}
			lo, hi, ok := parseAddrRange(o.args[0])
			if !ok {
				return mc
			}
			s := oneInterval(lo, hi)
			if o.inv {
				s = s.complement(0xffffffff)
			}
			switch o.name {
			case "src-range":
				mc.sets[fSrc] = mc.sets[fSrc].intersect(s)
			case "dst-range":
				mc.sets[fDst] = mc.sets[fDst].intersect(s)
			default:
				return mc
			}
		}
		mc.class = classPure
		mc.exact = true
	}
	return mc
}

// saveOpt is one option of a match's iptables-save form.
type saveOpt struct {
	name string
	args []string
	inv  bool
}

// saveOptions splits " [!] --name arg... [!] --name ..." into options. It
// refuses quoted arguments (only the unindexed comment and string
// matches have them).
func saveOptions(s string) ([]saveOpt, bool) {
	if strings.ContainsAny(s, "\"'\\") {
		return nil, false
	}
	var out []saveOpt
	inv := false
	for _, tok := range strings.Fields(s) {
		switch {
		case tok == "!":
			if inv {
				return nil, false
			}
			inv = true
		case strings.HasPrefix(tok, "--"):
			out = append(out, saveOpt{name: tok[2:], inv: inv})
			inv = false
		default:
			if len(out) == 0 || inv {
				return nil, false
			}
			out[len(out)-1].args = append(out[len(out)-1].args, tok)
		}
	}
	return out, !inv
}

// parsePortSave parses "N" or "A:B" as SavePortRange prints them (a
// reversed range holds no port).
func parsePortSave(s string) (lo, hi uint32, ok bool) {
	a, b, isRange := strings.Cut(s, ":")
	x, err := strconv.ParseUint(a, 10, 16)
	if err != nil {
		return 0, 0, false
	}
	y := x
	if isRange {
		if y, err = strconv.ParseUint(b, 10, 16); err != nil {
			return 0, 0, false
		}
	}
	return uint32(x), uint32(y), true
}

func parseAddrRange(s string) (lo, hi uint32, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	x, ok1 := saveIPv4(a)
	y, ok2 := saveIPv4(b)
	return x, y, ok1 && ok2
}

func saveIPv4(s string) (uint32, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return 0, false
	}
	var a uint32
	for _, p := range parts {
		v, err := strconv.ParseUint(p, 10, 8)
		if err != nil {
			return 0, false
		}
		a = a<<8 | uint32(v)
	}
	return a, true
}

// tcpFlagBits maps the names tcp's Save prints to their bits.
var tcpFlagBits = map[string]uint8{"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20, "NONE": 0}

func parseFlagList(s string) (uint8, bool) {
	var v uint8
	for _, f := range strings.Split(s, ",") {
		b, ok := tcpFlagBits[f]
		if !ok {
			return 0, false
		}
		v |= b
	}
	return v, true
}

// derivePorts reads a tcp or udp match. iptables-nft 1.8.9 builds it in
// one of two modes (see matchers/tcp.go): compat (the xt module: fragment
// check and hot-drops) for --tcp-option and for a match that constrains
// nothing, whose printed form is empty; native (payload comparisons, no
// fragment check, no hot-drop, missing bytes fail) otherwise. A native
// instance is pure and indexed; a compat one may hot-drop and is not.
// The probe in probeMatch confirms the mode on packets.
func derivePorts(name string, opts []saveOpt, mc matchCons) matchCons {
	if len(opts) == 0 {
		mc.class = classHotdrop // compat: indexes nothing, ends indexing
		return mc
	}
	var sp, dp *saveOpt
	for i := range opts {
		o := &opts[i]
		switch {
		case o.name == "sport" && len(o.args) == 1 && sp == nil:
			sp = o
		case o.name == "dport" && len(o.args) == 1 && dp == nil:
			dp = o
		case name == "tcp" && o.name == "tcp-flags" && len(o.args) == 2:
			mask, ok1 := parseFlagList(o.args[0])
			cmp, ok2 := parseFlagList(o.args[1])
			if !ok1 || !ok2 {
				return mc
			}
			var iv []ival
			for v := uint32(0); v < 256; v++ {
				if (uint8(v)&mask == cmp) != o.inv {
					iv = append(iv, ival{v, v})
				}
			}
			mc.sets[fFlags] = keySet{iv: normalize(iv)}
		case name == "tcp" && o.name == "tcp-option":
			mc.class = classHotdrop
			for f := range mc.sets {
				mc.sets[f] = allKeys
			}
			return mc
		default:
			return mc
		}
	}
	var ps [2]keySet
	for i, o := range []*saveOpt{sp, dp} {
		ps[i] = allKeys
		if o == nil {
			continue
		}
		lo, hi, ok := parsePortSave(o.args[0])
		if !ok {
			return mc
		}
		s := oneInterval(lo, hi)
		if o.inv {
			s = s.complement(0xffff)
		}
		ps[i] = s
	}
	if sp != nil && dp != nil && sp.inv && dp.inv && ps[0].complement(0xffff).isSinglePort() &&
		ps[1].complement(0xffff).isSinglePort() {
		// A pair of inverted single non-zero ports is one 32-bit
		// comparison, "not both equal": index only that both are there.
		mc.sets[fDport] = oneInterval(0, 0xffff)
		mc.class = classPure
		return mc
	}
	// A native comparison fails when its bytes are missing: the source
	// port needs 2 transport bytes, the destination port 4, the flags 14,
	// exactly the lengths from which their keys are read (shorter, the
	// keys are keyShort and keyNoFlags, outside every set). So the sets
	// are exactly the packets the match accepts.
	if sp != nil {
		mc.sets[fSport] = ps[0]
	}
	if dp != nil {
		mc.sets[fDport] = ps[1]
	}
	mc.class = classPure
	mc.exact = true
	return mc
}

// isSinglePort reports whether s is one non-zero port.
func (s keySet) isSinglePort() bool {
	return !s.all && len(s.iv) == 1 && s.iv[0].lo == s.iv[0].hi && s.iv[0].lo != 0
}

// deriveICMP reads an icmp match (icmp_match): later fragments never
// match, fewer than 8 bytes hot-drop, type 255 matches every message.
// Save prints only the lower code of a code range, so an inverted type
// with a code indexes only the fragment and length conditions.
func deriveICMP(opts []saveOpt, mc matchCons) matchCons {
	if len(opts) != 1 || opts[0].name != "icmp-type" || len(opts[0].args) != 1 {
		return mc
	}
	o := opts[0]
	var hit keySet
	exact := true
	switch t, code, hasCode := strings.Cut(o.args[0], "/"); {
	case t == "any":
		hit = oneInterval(0, 0xffff)
	default:
		ty, err := strconv.ParseUint(t, 10, 8)
		if err != nil {
			return mc
		}
		lo, hi := uint64(0), uint64(255)
		if hasCode {
			if lo, err = strconv.ParseUint(code, 10, 8); err != nil {
				return mc
			}
			exact = false // the upper code is not printed
		}
		hit = oneInterval(uint32(ty)<<8|uint32(lo), uint32(ty)<<8|uint32(hi))
	}
	short := oneInterval(keyShort, keyShort)
	switch {
	case !o.inv:
		mc.sets[fICMP] = hit.union(short)
	case exact:
		mc.sets[fICMP] = hit.complement(0xffff).union(short)
	}
	mc.sets[fFrag] = oneInterval(0, 0)
	mc.class = classHotdrop
	return mc
}

// deriveMultiport reads a multiport match (multiport_mt): later fragments
// never match, fewer than 4 transport bytes hot-drop (the destination
// port's short key), then the list decides. --ports (either side) and
// --sports index only the fragment condition: a packet of 2 or 3
// transport bytes has a source port key yet is hot-dropped whatever it is.
func deriveMultiport(opts []saveOpt, mc matchCons) matchCons {
	if len(opts) != 1 || len(opts[0].args) != 1 {
		return mc
	}
	o := opts[0]
	var iv []ival
	for _, e := range strings.Split(o.args[0], ",") {
		lo, hi, ok := parsePortSave(e)
		if !ok {
			return mc
		}
		iv = append(iv, ival{lo, hi})
	}
	hit := keySet{iv: normalize(iv)}
	if o.inv {
		hit = hit.complement(0xffff)
	}
	hit = hit.union(oneInterval(keyShort, keyShort))
	switch o.name {
	case "dports", "destination-ports":
		mc.sets[fDport] = hit
	case "ports", "sports", "source-ports":
	default:
		return mc
	}
	mc.sets[fFrag] = oneInterval(0, 0)
	mc.class = classHotdrop
	return mc
}
