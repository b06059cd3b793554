package conformance

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// Invariants of the string, time and limit parts of the generator, checked
// without the kernel so that a generator bug shows as such rather than as
// a disagreement.

// restoreWords splits the options of a rules-file line as
// iptables-restore does for what quote writes: words, double quotes
// grouping, and a backslash escaping the next byte inside them.
func restoreWords(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQ && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQ, have = !inQ, true
		case c == ' ' && !inQ:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// buildExt builds the match of "-m NAME opts..." through qtables'
// registry, feeding options as the rule parser does.
func buildExt(t *testing.T, text string) matchers.Match {
	t.Helper()
	words := restoreWords(text)
	if len(words) < 2 || words[0] != "-m" {
		t.Fatalf("not a match: %q", text)
	}
	ext, ok := matchers.LookupMatch(words[1])
	if !ok {
		t.Fatalf("no match %s", words[1])
	}
	mb := ext.New()
	inv := false
	for i := 2; i < len(words); i++ {
		if words[i] == "!" {
			inv = true
			continue
		}
		o, ok := matchers.FindOption(ext.Options, strings.TrimPrefix(words[i], "--"))
		if !ok {
			t.Fatalf("%q: unknown option %s", text, words[i])
		}
		if err := mb.Parse(o.Name, words[i+1:i+1+o.Args], inv); err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		i += o.Args
		inv = false
	}
	m, err := mb.Build(&matchers.Rule{Table: "filter", Chain: "FORWARD"})
	if err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	return m
}

func newTestGen(seed uint64, clock time.Time) *ruleGen {
	return &ruleGen{r: newRand(seed), x: newExtRand(seed), clock: clock, cur: &RuleHint{}}
}

// TestGenStringSpellings checks that every --string and --hex-string the
// generator writes means the pattern it recorded.
func TestGenStringSpellings(t *testing.T) {
	for seed := uint64(0); seed < 3000; seed++ {
		g := newTestGen(seed, DefaultClock())
		text := g.stringOpt()
		st := g.cur.String
		words := restoreWords(text)
		for i, w := range words {
			var got []byte
			switch w {
			case "--string":
				got = []byte(words[i+1])
			case "--hex-string":
				var err error
				if got, err = matchers.ParseHexString(words[i+1]); err != nil {
					t.Fatalf("%s: %v", text, err)
				}
			default:
				continue
			}
			if string(got) != string(st.Pattern) {
				t.Fatalf("%s: means %q, the generator recorded %q", text, got, st.Pattern)
			}
		}
		buildExt(t, text) // iptables' and the kernel's checks pass
	}
}

// TestGenStringPlacements checks that a pattern aimed inside a rule's
// window is found there (by the kmp search, which finds every occurrence)
// when the packet carries it as placed.
func TestGenStringPlacements(t *testing.T) {
	found, placed := 0, 0
	for seed := uint64(0); seed < 300; seed++ {
		c := GenerateAt(seed, DefaultClock())
		for _, h := range c.Hints.Rules {
			if h.String == nil || h.String.ICase || h.String.Inv {
				continue
			}
			st := h.String
			opt := fmt.Sprintf("-m string --algo kmp --hex-string %q --from %d --to %d", hexOf(st.Pattern), st.From, st.To)
			m := buildExt(t, opt)
			for _, p := range c.Packets {
				d := datagram(t, &p)
				if i := strings.Index(string(d), string(st.Pattern)); i >= st.From && i+len(st.Pattern) <= st.To {
					placed++
					if m.Match(&matchers.Context{Pkt: viewOfDatagram(t, d)}) {
						found++
					}
				}
			}
		}
	}
	if placed == 0 || found != placed {
		t.Errorf("%d of %d packets with a pattern inside its window match it", found, placed)
	}
}

func hexOf(p []byte) string {
	var b strings.Builder
	b.WriteByte('|')
	for _, c := range p {
		fmt.Fprintf(&b, "%02x", c)
	}
	b.WriteByte('|')
	return b.String()
}

// datagram returns the IPv4 datagram of p (its frame without Ethernet
// header and trailer).
func datagram(t *testing.T, p *Packet) []byte {
	t.Helper()
	f, err := p.Frame(testMAC1, testMAC2)
	if err != nil {
		t.Fatal(err)
	}
	return f[14 : 14+p.IPLen()]
}

func viewOfDatagram(t *testing.T, d []byte) *packet.View {
	t.Helper()
	dec, err := packet.NewDecoder(packet.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	v := &packet.View{}
	dec.Decode(d, v)
	return v
}

// TestGenTimeStable checks the promise of gen_time.go: every time rule
// gives one result from TimeMargin before the clock to TimeMargin after
// it, at clocks all over the day (also next to midnight), and most rules
// match.
func TestGenTimeStable(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	hits, n := 0, 0
	for i := 0; i < 2000; i++ {
		clock := time.Unix(1_600_000_000+r.Int64N(400_000_000), 0).UTC()
		if i%10 == 0 {
			clock = clock.Truncate(24 * time.Hour).Add(time.Duration(r.IntN(7200)-3600) * time.Second) // near midnight
		}
		g := newTestGen(uint64(i), clock)
		text := g.timeOpt()
		m := buildExt(t, text)
		c := &matchers.Context{}
		var first bool
		for k, d := range []time.Duration{0, -TimeMargin + time.Second, TimeMargin - time.Second, -TimeMargin / 2, TimeMargin / 3} {
			c.Now = clock.Add(d)
			got := m.Match(c)
			if k == 0 {
				first = got
			} else if got != first {
				t.Fatalf("%s: %v at %s, %v at %s", text, first, clock.Format(time.RFC3339), got, c.Now.Format(time.RFC3339))
			}
		}
		n++
		if first {
			hits++
		}
	}
	if hits < n/2 || hits > n*9/10 {
		t.Errorf("%d of %d time rules match at their clock", hits, n)
	}
}

// TestGenLimitSlow checks that every generated rate costs ten seconds or
// more per packet, so that no bucket refills while a case is sent.
func TestGenLimitSlow(t *testing.T) {
	for seed := uint64(0); seed < 500; seed++ {
		g := newTestGen(seed, DefaultClock())
		text := g.limitOpt()
		buildExt(t, text)
		f := strings.Fields(text)
		for i := range f {
			if f[i] != "--limit" {
				continue
			}
			n, unit, _ := strings.Cut(f[i+1], "/")
			v, _ := strconv.Atoi(n)
			secs := map[byte]int{'s': 1, 'm': 60, 'h': 3600, 'd': 86400}[strings.ToLower(unit)[0]]
			if secs/v < 10 {
				t.Errorf("%s: a packet every %d s", text, secs/v)
			}
		}
	}
}
