package conformance

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// String matches for the generator: patterns of text, binary bytes and
// Latin-1 letters (whose case folding the kernel's ctype table decides),
// repetitive patterns that exercise Boyer-Moore's shift tables, both
// algorithms, --icase, windows set by --from and --to, and every
// --hex-string spelling (literal text, hex blocks with and without spaces,
// escaped bytes). Packets aimed at a string rule carry its pattern inside
// the window, straddling one of its edges, or not at all, in the case
// variations --icase allows.

// StringTest is a string match: its pattern and window [From, To) over the
// datagram, counted from the first byte of the IP header.
type StringTest struct {
	Pattern  []byte
	From, To int
	ICase    bool
	Inv      bool
}

// stringPlacement asks build to write a pattern at an offset of the
// datagram (-1: anywhere after the headers). When the offset falls in the
// headers, another in [lo, hi] is taken if there is one after them.
type stringPlacement struct {
	text   []byte
	at     int
	lo, hi int
}

var stringWords = []string{
	"GET ", "HTTP/1.1", "User-Agent", "Host:", "password", "admin", "xyzzy", "a", "ab", "abab", "aaab",
	"abcab", "abcabcab", "ababbabab", "zz", "/etc/passwd", "SSH-2.0", "cmd.exe", "\x00\x00", "\x16\x03\x01",
	"\xde\xad\xbe\xef", "select * from", "a\"b", `back\slash`, "pipe|pipe", "tab\tx",
}

// stringAlphabet is what random patterns are made of: few distinct bytes,
// so that partial matches and shifts happen, letters in both cases, and
// the Latin-1 bytes whose kernel case folding is irregular (0xdf folds to
// 0xbf, 0xff to 0xdf).
var stringAlphabet = []byte{'a', 'b', 'A', 'B', 0x00, 0xff, 0xdf, 0xbf, 0xe9, 0xc9, '|', '\\', '"', ' '}

// stringOpt returns "-m string ..." and records the test in g.cur.
func (g *ruleGen) stringOpt() string {
	x := g.x
	var pat []byte
	switch k := x.IntN(10); {
	case k < 4:
		pat = []byte(stringWords[x.IntN(len(stringWords))])
	case k < 9:
		pat = make([]byte, 1+x.IntN(6))
		for i := range pat {
			pat[i] = stringAlphabet[x.IntN(len(stringAlphabet))]
		}
	default:
		pat = make([]byte, 16+x.IntN(48))
		for i := range pat {
			pat[i] = byte(x.UintN(256))
		}
	}
	t := &StringTest{Pattern: pat, To: 65535}
	var opts []string
	opts = append(opts, "--algo "+[]string{"bm", "kmp"}[x.IntN(2)])
	if x.IntN(3) == 0 {
		t.From = []int{0, 1, 20, 28, 40, 48, x.IntN(120)}[x.IntN(7)]
		opts = append(opts, "--from "+strconv.Itoa(t.From))
	}
	if x.IntN(3) == 0 {
		switch x.IntN(4) {
		case 0:
			t.To = t.From + len(pat) // room for exactly one placement
		case 1:
			t.To = t.From + len(pat) - 1 // too small: never matches
		default:
			t.To = t.From + len(pat) + x.IntN(300)
		}
		opts = append(opts, "--to "+strconv.Itoa(t.To))
	}
	if x.IntN(3) == 0 {
		t.ICase = true
		opts = append(opts, "--icase")
	}
	pattern := stringPatternOpt(x.IntN(3) == 0 || !printableText(pat), pat, x.IntN)
	if x.IntN(5) == 0 {
		t.Inv = true
		pattern = "! " + pattern
	}
	opts = append(opts, pattern)
	x.Shuffle(len(opts), func(i, j int) { opts[i], opts[j] = opts[j], opts[i] })
	g.cur.String = t
	g.hints.Strings = append(g.hints.Strings, t)
	return "-m string " + strings.Join(opts, " ")
}

// printableText reports whether p can be given to --string in a rules file
// (printable ASCII; iptables prints anything else back in hex anyway).
func printableText(p []byte) bool {
	for _, c := range p {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// stringPatternOpt spells p as "--string TEXT" or, with hex, as
// "--hex-string" mixing literal runs and |..| blocks: bytes that are not
// printable, and '|' and '\', always go in blocks (a '\' escape right
// after a block is not read as one), other bytes now and then.
func stringPatternOpt(hex bool, p []byte, intn func(int) int) string {
	if !hex {
		return "--string " + quote(string(p))
	}
	var b strings.Builder
	inBlock := false
	for i, c := range p {
		blk := c < 0x20 || c > 0x7e || c == '|' || c == '\\' || intn(3) == 0
		switch {
		case blk && !inBlock:
			b.WriteByte('|')
			for range intn(3) / 2 {
				b.WriteByte(' ') // spaces after the opening '|'
			}
			inBlock = true
		case !blk && inBlock:
			b.WriteByte('|')
			inBlock = false
		}
		if blk {
			fmt.Fprintf(&b, []string{"%02x", "%02X"}[intn(2)], c)
			if i+1 < len(p) && intn(3) == 0 {
				b.WriteByte(' ') // one space after a pair
			}
		} else {
			b.WriteByte(c)
		}
	}
	if inBlock {
		b.WriteByte('|')
	}
	return "--hex-string " + quote(b.String())
}

// kernelFold is the kernel's toupper (lib/ctype.c, Latin-1): what --icase
// compares. Two bytes are the same to --icase when they fold alike.
func kernelFold(c byte) byte {
	if c >= 'a' && c <= 'z' || c >= 0xdf && c != 0xf7 {
		return c - 0x20
	}
	return c
}

// caseVariant returns p with some bytes replaced by others that fold
// alike, as text --icase must still find.
func (g *pktGen) caseVariant(p []byte) []byte {
	out := make([]byte, len(p))
	for i, c := range p {
		out[i] = c
		if g.x.IntN(2) == 0 {
			continue
		}
		var alts []byte
		for d := 0; d < 256; d++ {
			if byte(d) != c && kernelFold(byte(d)) == kernelFold(c) {
				alts = append(alts, byte(d))
			}
		}
		if len(alts) > 0 {
			out[i] = alts[g.x.IntN(len(alts))]
		}
	}
	return out
}

// aimString asks for t's pattern in the packet: inside the window, over
// one of its edges, or nowhere (and now and then a near miss: the pattern
// with one byte changed).
func (g *pktGen) aimString(s *spec, t *StringTest) {
	text := t.Pattern
	if t.ICase && g.x.IntN(3) > 0 {
		text = g.caseVariant(text)
	}
	n := len(text)
	switch k := g.x.IntN(20); {
	case k < 12: // inside [From, To)
		hi := min(t.To, 900) - n
		if hi < t.From {
			return
		}
		at := t.From + g.x.IntN(hi-t.From+1)
		if g.x.IntN(3) == 0 {
			at = []int{t.From, hi}[g.x.IntN(2)] // on an edge
		}
		s.strings = append(s.strings, stringPlacement{text, at, t.From, hi})
	case k < 15: // one byte outside
		at := []int{t.From - 1, t.To - n + 1}[g.x.IntN(2)]
		if at >= 0 && at+n <= 900 {
			s.strings = append(s.strings, stringPlacement{text, at, at, at})
		}
	case k < 17: // a near miss
		miss := append([]byte(nil), text...)
		miss[g.x.IntN(n)] ^= 1 << g.x.IntN(8)
		s.strings = append(s.strings, stringPlacement{text: miss, at: -1})
	}
}

// placeStrings writes the requested patterns into p after its headers,
// growing the datagram when an offset lies beyond its end, and now and
// then one of the rule set's patterns into a packet not aimed at it.
//
// In a rule set with string matches, record route and timestamp options
// become NOPs: the kernel fills them in when it receives the datagram
// (ip_options_compile: the egress address and an advanced pointer, or the
// time of day in ms), before FORWARD, so a string match that covers the
// IP header sees those bytes, which qtables' view of the packet does not
// reproduce yet.
func (g *pktGen) placeStrings(p *Packet, s *spec) {
	if len(g.h.Strings) > 0 && optionsRewritten(p.Options) {
		p.Options = bytes.Repeat([]byte{1}, len(p.Options))
	}
	if len(g.h.Strings) > 0 && g.x.IntN(4) == 0 {
		g.aimString(s, g.h.Strings[g.x.IntN(len(g.h.Strings))])
	}
	places := s.strings
	if len(places) == 0 {
		return
	}
	ipHdr := 20 + (len(p.Options)+3)/4*4
	hdr := ipHdr + transportHeaderLen(p)
	room := IngressMTU - len(p.Trailer)
	for _, pl := range places {
		at := pl.at
		switch {
		case at < 0:
			at = hdr + g.x.IntN(max(1, p.IPLen()-hdr+16))
		case at < hdr && pl.hi >= hdr:
			lo := max(pl.lo, hdr)
			at = lo + g.x.IntN(pl.hi-lo+1)
		}
		if at < hdr || at+len(pl.text) > room {
			continue // would overwrite headers other rules test, or not fit
		}
		end := at + len(pl.text) - ipHdr
		for len(p.L4) < end {
			p.L4 = append(p.L4, stringAlphabet[g.x.IntN(len(stringAlphabet))])
		}
		copy(p.L4[at-ipHdr:], pl.text)
	}
	if p.IPLen() > EgressMTU {
		p.DF = false
	}
}

// transportHeaderLen is how many bytes of p.L4 are a transport header
// that rules read (none in a later fragment).
func transportHeaderLen(p *Packet) int {
	if p.FragOff != 0 {
		return 0
	}
	n := 0
	switch p.Proto {
	case 6:
		n = 20
		if len(p.L4) > 12 {
			n = max(n, int(p.L4[12]>>4)*4)
		}
	case 17, 1:
		n = 8
	case 132, 136, 33:
		n = 4
	}
	return min(n, len(p.L4))
}

// extMatches adds string, time and limit matches to a rule's matches, at
// random places but never before an implicit match (whose options must
// follow the base options directly).
func (g *ruleGen) extMatches(matches []string) []string {
	first := 0
	if len(matches) > 0 && !strings.HasPrefix(matches[0], "-m ") {
		first = 1
	}
	add := func(m string) {
		matches = slices.Insert(matches, first+g.x.IntN(len(matches)-first+1), m)
	}
	if g.x.Float64() < 0.15 {
		add(g.stringOpt())
	}
	if g.x.Float64() < 0.06 {
		add(g.timeOpt())
	}
	if g.x.Float64() < 0.06 {
		add(g.limitOpt())
	}
	return matches
}

// optionsRewritten reports whether IPv4 options hold a record route (7) or
// timestamp (68) option, which the kernel rewrites on receipt.
func optionsRewritten(o []byte) bool {
	for i := 0; i < len(o); {
		switch o[i] {
		case 0:
			return false
		case 1:
			i++
			continue
		case 7, 68:
			return true
		}
		if i+1 >= len(o) || o[i+1] < 2 {
			return false
		}
		i += int(o[i+1])
	}
	return false
}
