package matchers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The string match, revision 1 (kernel xt_string.c string_mt with the
// textsearch algorithms of lib/ts_bm.c and lib/ts_kmp.c, the search window
// of net/core/skbuff.c skb_find_text; iptables libxt_string.c).
//
// Where the search looks: skb_find_text searches the skb's data from byte
// --from up to (not including) byte --to, and at every hook the IPv4 path
// runs, skb->data is the first byte of the IP header and skb->len the
// datagram's total length. So offsets count from the start of the IP
// header, headers included, and a pattern is found only when all of it lies
// in [from, min(to, total length)). qtables searches View.Network, which is
// exactly those bytes.
//
// The kernel's Boyer-Moore is not the textbook one: its good-suffix table
// is built by its own procedure, the bad-character table is indexed by the
// raw (not case-folded) text byte, and --icase folds with the kernel's
// Latin-1 ctype table. Each of these changes which occurrences are found,
// so the search below is that algorithm step for step, not a library
// search: a pattern the kernel's bm misses, qtables misses too. The one
// thing not reproduced is a non-linear skb: the kernel's bm restarts at
// every fragment boundary of the skb's data (missing a pattern that spans
// it) and kmp does not; qtables always sees one contiguous buffer, which is
// what the kernel sees for packets that arrive in one linear buffer (every
// frame under a page, as in the conformance suite).

func init() {
	RegisterMatch(&MatchExt{
		Name: "string",
		Options: []Option{
			{Name: "from", Args: 1},
			{Name: "to", Args: 1},
			{Name: "algo", Args: 1},
			{Name: "string", Args: 1, Invert: true},
			{Name: "hex-string", Args: 1, Invert: true},
			{Name: "icase"},
			{Name: "stream"}, // qtables: search the flow's stream (l7string.go)
		},
		New: func() MatchBuilder { return &stringBuilder{to: 0xffff} },
	})
}

// stringMaxPattern is XT_STRING_MAX_PATTERN_SIZE.
const stringMaxPattern = 128

// stringMaxAlgo is XT_STRING_MAX_ALGO_NAME_SIZE less the terminating NUL:
// iptables cuts a longer --algo to this length.
const stringMaxAlgo = 15

// Search algorithms.
const (
	algoBM uint8 = iota
	algoKMP
)

var algoNames = [...]string{algoBM: "bm", algoKMP: "kmp"}

type stringBuilder struct {
	seen     map[string]bool
	algo     string
	from, to uint16
	icase    bool
	pattern  []byte
	hex      bool // the pattern came from --hex-string
	havePat  bool
	inv      bool
	stream   bool
}

func (b *stringBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return err
	}
	switch name {
	case "from", "to":
		v, err := ParseUint(args[0], 0xffff)
		if err != nil {
			return fmt.Errorf("bad value for option \"--%s\", or out of range (0-65535)", name)
		}
		if name == "from" {
			b.from = uint16(v)
		} else {
			b.to = uint16(v)
		}
	case "algo":
		b.algo = args[0]
		if len(b.algo) > stringMaxAlgo {
			b.algo = b.algo[:stringMaxAlgo]
		}
	case "icase":
		b.icase = true
	case "stream":
		b.stream = true
	case "string", "hex-string":
		other := "hex-string"
		if name == "hex-string" {
			other = "string"
		}
		if b.seen[other] {
			return fmt.Errorf("option \"--%s\" cannot be used together with \"--%s\"", name, other)
		}
		var err error
		if name == "string" {
			if len(args[0]) > stringMaxPattern {
				return fmt.Errorf("STRING too long %q", args[0])
			}
			b.pattern = []byte(args[0])
		} else if b.pattern, err = ParseHexString(args[0]); err != nil {
			return err
		}
		b.havePat, b.hex, b.inv = true, name == "hex-string", invert
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return nil
}

// Build checks what iptables checks (--algo and a pattern given) and then
// what the kernel's string_mt_check and textsearch_prepare refuse: an
// unknown algorithm, an empty pattern and --from beyond --to.
func (b *stringBuilder) Build(r *Rule) (Match, error) {
	if !b.seen["algo"] {
		return nil, errors.New("option \"--algo\" must be specified")
	}
	if !b.havePat {
		return nil, errors.New("STRING match: You must specify `--string' or `--hex-string'")
	}
	m := &stringMatch{from: b.from, to: b.to, icase: b.icase, inv: b.inv, pattern: b.pattern}
	switch b.algo {
	case "bm":
		m.algo = algoBM
	case "kmp":
		m.algo = algoKMP
	case "fsm":
		// ts_fsm exists in the kernel, but its pattern is a list of
		// binary tokens, not text: qtables does not implement it.
		return nil, errors.New("--algo fsm (token automaton patterns) is not supported by qtables; use bm or kmp")
	default:
		return nil, fmt.Errorf("unknown string search algorithm %q (the kernel has bm and kmp)", b.algo)
	}
	if len(b.pattern) == 0 {
		return nil, errors.New("the pattern is empty (the kernel refuses it)")
	}
	if b.from > b.to {
		return nil, fmt.Errorf("--from %d is beyond --to %d (the kernel refuses it)", b.from, b.to)
	}
	m.prepare()
	if b.stream {
		return newStreamStringMatch(m, b.seen["to"], r)
	}
	return m, nil
}

// ParseHexString decodes a --hex-string argument as libxt_string's
// parse_hex_string does, quirks included: text outside |...| is literal; a
// backslash outside a block makes the next byte literal; inside a block,
// pairs of hex digits are bytes, each optionally followed by one space, and
// spaces right after the opening '|' are skipped. The byte right after any
// '|' is taken as data (literal outside a block, hex inside) without being
// looked at as '|' or '\', so "|41||42|" is "A|42". An unterminated block
// at the very end ("abc|") is accepted. At most 128 bytes.
func ParseHexString(s string) ([]byte, error) {
	// at reads s as the C string it is: a NUL after the end.
	at := func(i int) byte {
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	n := len(s)
	if n == 0 {
		return nil, errors.New("STRING must contain at least one char")
	}
	out := make([]byte, 0, min(n, stringMaxPattern))
	hexMode, literal := false, false
	for i := 0; i < n; {
		if len(out) >= stringMaxPattern {
			return nil, fmt.Errorf("STRING too long %q", s)
		}
		switch {
		case s[i] == '\\' && !hexMode:
			literal = true
		case s[i] == '\\':
			return nil, errors.New("Cannot include literals in hex data")
		case s[i] == '|':
			if hexMode {
				hexMode = false
			} else {
				hexMode = true
				for at(i+1) == ' ' {
					i++
				}
			}
			if i+1 >= n {
				return out, nil
			}
			i++
		}
		switch {
		case literal:
			if i+1 >= n {
				return nil, errors.New("Bad literal placement at end of string")
			}
			out = append(out, s[i+1])
			i += 2
			literal = false
		case hexMode:
			if i+1 >= n {
				return nil, errors.New("Odd number of hex digits")
			}
			if i+2 >= n {
				return nil, errors.New("Invalid hex block")
			}
			hi, lo := hexVal(s[i]), hexVal(s[i+1])
			if hi > 15 {
				return nil, fmt.Errorf("Invalid hex char '%c'", s[i])
			}
			if lo > 15 {
				return nil, fmt.Errorf("Invalid hex char '%c'", s[i+1])
			}
			out = append(out, hi<<4|lo)
			if s[i+2] == ' ' {
				i += 3
			} else {
				i += 2
			}
		default:
			out = append(out, s[i])
			i++
		}
	}
	return out, nil
}

// hexVal is the value of a hex digit (C isxdigit), 99 for others.
func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 99
}

// ---- the kernel's character classes ----

// kernelToUpper and kernelToLower are the kernel's toupper and tolower
// (lib/ctype.c): Latin-1 aware, so 0xE0..0xFE (but 0xF7) fold to 0xC0..0xDE
// and, because the table marks 0xDF and 0xFF lower case, toupper(0xDF) is
// 0xBF and toupper(0xFF) is 0xDF. --icase folds with these, not ASCII.
var kernelToUpper, kernelToLower [256]byte

func init() {
	for c := 0; c < 256; c++ {
		kernelToUpper[c], kernelToLower[c] = byte(c), byte(c)
		switch {
		case c >= 'a' && c <= 'z', c >= 0xdf && c != 0xf7:
			kernelToUpper[c] = byte(c - 0x20)
		case c >= 'A' && c <= 'Z', c >= 0xc0 && c <= 0xde && c != 0xd7:
			kernelToLower[c] = byte(c + 0x20)
		}
	}
}

// ---- the match ----

// stringMatch is struct xt_string_info with the prepared search.
type stringMatch struct {
	algo     uint8
	from, to uint16
	icase    bool
	inv      bool
	// pattern is the pattern as given, for printing; search is the one
	// the kernel's textsearch keeps (upper-cased with --icase).
	pattern []byte
	search  []byte
	// fold is the identity or kernelToUpper: the text byte the
	// comparison sees.
	fold *[256]byte
	// Boyer-Moore tables (ts_bm).
	badShift  [256]int32
	goodShift []int32
	// KMP prefix table (ts_kmp).
	prefix []int32
	// set, when not nil, is the rule set's automaton holding this
	// pattern as setID (multipattern.go): the match answers from the
	// packet's one scan instead of searching on its own.
	set   *stringSet
	setID int32
}

var identityBytes = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
	}
	return t
}()

// prepare builds the search tables once, as textsearch_prepare does when
// the rule is loaded, so that Match does not allocate.
func (m *stringMatch) prepare() {
	n := len(m.pattern)
	m.fold = &identityBytes
	m.search = append([]byte(nil), m.pattern...)
	if m.icase {
		m.fold = &kernelToUpper
		for i, c := range m.search {
			m.search[i] = kernelToUpper[c]
		}
	}
	switch m.algo {
	case algoBM:
		m.prepareBM()
	case algoKMP:
		// ts_kmp's compute_prefix_tbl compares case-folded bytes.
		m.prefix = make([]int32, n)
		k := int32(0)
		for q := 1; q < n; q++ {
			for k > 0 && m.search[k] != m.search[q] {
				k = m.prefix[k-1]
			}
			if m.search[k] == m.search[q] {
				k++
			}
			m.prefix[q] = k
		}
	}
}

// prepareBM is ts_bm's compute_prefix_tbl on the stored pattern.
func (m *stringMatch) prepareBM() {
	p := m.search
	n := len(p)
	for i := range m.badShift {
		m.badShift[i] = int32(n)
	}
	for i := 0; i < n-1; i++ {
		m.badShift[p[i]] = int32(n - 1 - i)
		if m.icase {
			m.badShift[kernelToLower[p[i]]] = int32(n - 1 - i)
		}
	}
	m.goodShift = make([]int32, n)
	m.goodShift[0] = 1
	for i := 1; i < n; i++ {
		m.goodShift[i] = int32(n)
	}
	for i, g := n-1, 1; i > 0; i, g = i-1, g+1 {
		for j := i - 1; j >= 1-g; j-- {
			if bmSubpattern(p, i, j, g) {
				m.goodShift[g] = int32(n - j - g)
				break
			}
		}
	}
}

// bmSubpattern is ts_bm's subpattern(): whether the g bytes ending at
// i+g-1 reoccur ending at j+g-1 (running off the pattern's start counts as
// a reoccurrence), preceded by a different byte.
func bmSubpattern(p []byte, i, j, g int) bool {
	x, y := i+g-1, j+g-1
	for {
		eq := p[x] == p[y]
		x, y = x-1, y-1
		if !eq {
			return false
		}
		if y < 0 {
			return true
		}
		if g--; g == 0 {
			return p[i-1] != p[j-1]
		}
	}
}

// Match is string_mt: the pattern found in the window XOR the inversion.
func (m *stringMatch) Match(c *Context) bool {
	if m.set != nil {
		if sc := stringScanOf(c, m.set); sc != nil {
			return sc.found(m.setID) != m.inv
		}
	}
	data := c.Pkt.Network
	if int(m.from) >= len(data) {
		return m.inv
	}
	text := data[m.from:min(len(data), int(m.to))]
	var found bool
	if m.algo == algoBM {
		found = m.findBM(text) >= 0
	} else {
		found = m.findKMP(text) >= 0
	}
	return found != m.inv
}

// findBM is ts_bm's bm_find over one block: the index of the first
// occurrence it finds, or -1.
func (m *stringMatch) findBM(text []byte) int {
	n := len(m.search)
	fold := m.fold
	for shift := n - 1; shift < len(text); {
		i := 0
		for i < n && fold[text[shift-i]] == m.search[n-1-i] {
			i++
		}
		if i == n {
			return shift + 1 - n
		}
		bs := int(m.badShift[text[shift-i]])
		shift = max(shift-i+bs, shift+int(m.goodShift[i]))
	}
	return -1
}

// findKMP is ts_kmp's kmp_find over one block.
func (m *stringMatch) findKMP(text []byte) int {
	n := int32(len(m.search))
	fold := m.fold
	q := int32(0)
	for i, c := range text {
		c = fold[c]
		for q > 0 && m.search[q] != c {
			q = m.prefix[q-1]
		}
		if m.search[q] == c {
			q++
		}
		if q == n {
			return i + 1 - int(n)
		}
	}
	return -1
}

// stringIsHex is libxt_string's is_hex_string: the pattern is printed in
// hex when a byte is not printable (C isprint) or the last byte is a
// backslash.
func stringIsHex(p []byte) bool {
	for _, c := range p {
		if c < 0x20 || c > 0x7e {
			return true
		}
	}
	return len(p) > 0 && p[len(p)-1] == '\\'
}

// writePattern appends ` "|6162|"` or ` "text"` (with " and \ escaped),
// as print_hex_string and print_string do.
func (m *stringMatch) writePattern(b *strings.Builder) {
	const hexDigits = "0123456789abcdef"
	b.WriteString(` "`)
	if stringIsHex(m.pattern) {
		b.WriteByte('|')
		for _, c := range m.pattern {
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
		b.WriteByte('|')
	} else {
		for _, c := range m.pattern {
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// Save prints ` [!] --string "text"` or ` [!] --hex-string "|..|"`, then
// ` --algo NAME`, ` --from N` unless 0, ` --to N` unless 65535, ` --icase`.
// Which of --string and --hex-string is chosen depends on the bytes, not
// on the option the rule was written with.
func (m *stringMatch) Save(b *strings.Builder) {
	writeInv(b, m.inv)
	if stringIsHex(m.pattern) {
		b.WriteString(" --hex-string")
	} else {
		b.WriteString(" --string")
	}
	m.writePattern(b)
	b.WriteString(" --algo ")
	b.WriteString(algoNames[m.algo])
	if m.from != 0 {
		b.WriteString(" --from ")
		b.WriteString(strconv.Itoa(int(m.from)))
	}
	if m.to != 0xffff {
		b.WriteString(" --to ")
		b.WriteString(strconv.Itoa(int(m.to)))
	}
	if m.icase {
		b.WriteString(" --icase")
	}
}

// List prints ` STRING match  "text" ALGO name bm FROM 1 TO 9 ICASE`; the
// inversion is a "!" between "match" and the pattern (two spaces without).
func (m *stringMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" STRING match ")
	if m.inv {
		b.WriteByte('!')
	}
	m.writePattern(b)
	b.WriteString(" ALGO name ")
	b.WriteString(algoNames[m.algo])
	if m.from != 0 {
		b.WriteString(" FROM ")
		b.WriteString(strconv.Itoa(int(m.from)))
	}
	if m.to != 0xffff {
		b.WriteString(" TO ")
		b.WriteString(strconv.Itoa(int(m.to)))
	}
	if m.icase {
		b.WriteString(" ICASE")
	}
}
