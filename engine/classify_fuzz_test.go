package engine

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// The differential test of the classifier: random rule sets and random
// packets (fragments, short transport headers, marks, interfaces), each
// evaluated through a linear Program and a classified one compiled from
// separate parses of the same text, must give the same results, marks,
// hot-drops, events and counters. A third Program runs with the verifier
// on, which panics on any difference it sees. go test runs the seed
// corpus; make fuzz explores.

// fuzzBytes hands out the fuzz input as small choices; past its end the
// choices come from a generator seeded by the input.
type fuzzBytes struct {
	b []byte
	i int
	x uint64
}

func (z *fuzzBytes) byte() byte {
	if z.i < len(z.b) {
		z.i++
		return z.b[z.i-1]
	}
	if z.x == 0 {
		z.x = 0x9e3779b97f4a7c15
		for _, c := range z.b {
			z.x = (z.x ^ uint64(c)) * 0x100000001b3
		}
		z.x |= 1
	}
	z.x ^= z.x << 13
	z.x ^= z.x >> 7
	z.x ^= z.x << 17
	return byte(z.x >> 32)
}

// n returns a choice in [0, n).
func (z *fuzzBytes) n(n int) int { return int(z.byte()) % n }

func (z *fuzzBytes) u16() uint16 { return uint16(z.byte())<<8 | uint16(z.byte()) }

func (z *fuzzBytes) pick(s ...string) string { return s[z.n(len(s))] }

// Addresses come from a small pool so that rules and packets meet.
var fuzzNets = []string{"10.0.0.0", "10.0.1.0", "10.1.0.0", "192.168.1.0", "0.0.0.0", "10.0.0.128"}

func (z *fuzzBytes) addr() string {
	a := netip.MustParseAddr(fuzzNets[z.n(len(fuzzNets))]).As4()
	a[3] |= z.byte() & 0x83
	return netip.AddrFrom4(a).String()
}

func (z *fuzzBytes) addrOpt(opt string) string {
	neg := ""
	if z.n(4) == 0 {
		neg = "! "
	}
	switch z.n(4) {
	case 0:
		return fmt.Sprintf(" %s%s %s", neg, opt, z.addr())
	case 1:
		// A non-contiguous mask.
		return fmt.Sprintf(" %s%s %s/255.0.255.0", neg, opt, z.addr())
	default:
		l := []int{0, 8, 16, 24, 25, 31, 32}[z.n(7)]
		if l == 0 {
			neg = "" // the kernel refuses "! -s 0/0"
		}
		return fmt.Sprintf(" %s%s %s/%d", neg, opt, z.addr(), l)
	}
}

// port returns a port or range; udp accepts reversed ranges, which hold
// no port.
func (z *fuzzBytes) port(reversed bool) string {
	p := []uint16{0, 1, 22, 53, 80, 443, 1023, 1024, 65535}
	a, b := p[z.n(len(p))], p[z.n(len(p))]
	switch z.n(4) {
	case 0:
		return fmt.Sprint(a)
	case 1:
		return fmt.Sprintf("%d:", a)
	case 2:
		if reversed {
			return fmt.Sprintf("%d:%d", a, b)
		}
	}
	return fmt.Sprintf("%d:%d", min(a, b), max(a, b))
}

func (z *fuzzBytes) neg() string {
	if z.n(3) == 0 {
		return " !"
	}
	return ""
}

// rule returns one rule's options (without -A CHAIN); later is the list of
// chains it may jump to.
func (z *fuzzBytes) rule(later []string) string {
	var b strings.Builder
	if z.n(2) == 0 {
		b.WriteString(z.addrOpt("-s"))
	}
	if z.n(2) == 0 {
		b.WriteString(z.addrOpt("-d"))
	}
	if z.n(4) == 0 {
		fmt.Fprintf(&b, "%s -i %s", z.neg(), z.pick("eth0", "eth1", "eth+", "ppp0", "e+"))
	}
	if z.n(5) == 0 {
		fmt.Fprintf(&b, "%s -o %s", z.neg(), z.pick("eth0", "eth1", "eth+", "wg0"))
	}
	proto := z.pick("tcp", "udp", "icmp", "", "", "47")
	if proto != "" {
		inv := z.n(6) == 0
		if inv {
			b.WriteString(" !")
		}
		b.WriteString(" -p " + proto)
		if inv {
			proto = "" // no protocol match after a negated protocol
		}
	}
	switch z.n(5) {
	case 0:
		b.WriteString(" -f")
	case 1:
		b.WriteString(" ! -f")
	}
	for k := z.n(4); k > 0; k-- {
		switch z.n(12) {
		case 0, 1:
			switch proto {
			case "tcp":
				b.WriteString(" -m tcp")
				if z.n(3) != 0 {
					fmt.Fprintf(&b, "%s --sport %s", z.neg(), z.port(false))
				}
				if z.n(3) != 0 {
					fmt.Fprintf(&b, "%s --dport %s", z.neg(), z.port(false))
				}
				switch z.n(5) {
				case 0:
					fmt.Fprintf(&b, "%s --syn", z.neg())
				case 1:
					fmt.Fprintf(&b, "%s --tcp-flags %s %s", z.neg(), z.pick("SYN,ACK", "ALL", "FIN,RST", "NONE"), z.pick("SYN", "NONE", "ACK", "FIN"))
				case 2:
					fmt.Fprintf(&b, "%s --tcp-option %d", z.neg(), 1+z.n(8))
				}
			case "udp":
				b.WriteString(" -m udp")
				if z.n(3) != 0 {
					fmt.Fprintf(&b, "%s --sport %s", z.neg(), z.port(true))
				}
				if z.n(3) != 0 {
					fmt.Fprintf(&b, "%s --dport %s", z.neg(), z.port(true))
				}
			case "icmp":
				fmt.Fprintf(&b, " -m icmp%s --icmp-type %s", z.neg(), z.pick("any", "8", "0", "3", "3/1", "11/0", "5"))
			}
		case 2:
			if proto == "tcp" || proto == "udp" {
				fmt.Fprintf(&b, " -m multiport%s --%s %s,%s", z.neg(), z.pick("dports", "sports", "ports"), z.pick("22", "80", "1:1023"), z.pick("443", "53", "1024:65535"))
			}
		case 3, 4:
			fmt.Fprintf(&b, " -m mark%s --mark %s", z.neg(), z.pick("0x1", "0x2", "0x1/0x1", "0x0/0xff", "0x3/0x1", "0x10/0xf0"))
		case 5:
			fmt.Fprintf(&b, " -m iprange%s --%s-range %s-%s", z.neg(), z.pick("src", "dst"), z.pick("10.0.0.0", "10.0.0.5"), z.pick("10.0.0.200", "10.1.255.255"))
		case 6:
			fmt.Fprintf(&b, " -m length%s --length %s", z.neg(), z.pick("0:100", "40:1500", "60"))
		case 7:
			fmt.Fprintf(&b, " -m ttl --ttl-%s %d", z.pick("eq", "gt", "lt"), 1+z.n(100))
		case 8:
			b.WriteString(" -m comment --comment x")
		case 9:
			fmt.Fprintf(&b, " -m limit --limit %d/sec --limit-burst %d", 1+z.n(5), 1+z.n(3))
		}
	}
	switch t := z.n(12); {
	case t < 3:
		b.WriteString(" -j " + z.pick("ACCEPT", "DROP"))
	case t == 3:
		b.WriteString(" -j RETURN")
	case t < 6 && len(later) > 0:
		fmt.Fprintf(&b, " -%s %s", z.pick("j", "g"), later[z.n(len(later))])
	case t < 8:
		fmt.Fprintf(&b, " -j MARK --set-xmark %s", z.pick("0x1/0x1", "0x2/0xffffffff", "0x0/0x1", "0x10/0xf0"))
	case t == 8:
		b.WriteString(" -j LOG --log-prefix f")
	}
	return b.String()
}

// ruleset returns a rules file: FORWARD with up to 60 rules, user chains
// A, B, C that only jump forward (no loops).
func (z *fuzzBytes) ruleset() string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n")
	fmt.Fprintf(&b, ":FORWARD %s [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n:C - [0:0]\n", z.pick("ACCEPT", "DROP"))
	chains := []string{"FORWARD", "A", "B", "C"}
	for i, ch := range chains {
		n := 1 + z.n(60)
		if i > 0 {
			n = z.n(30)
		}
		for j := 0; j < n; j++ {
			fmt.Fprintf(&b, "-A %s%s\n", ch, z.rule(chains[i+1:]))
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// packet returns a raw IPv4 datagram: protocol, fragment offset, ports,
// flags and transport length vary, so short headers and fragments occur.
func (z *fuzzBytes) packet(buf []byte) []byte {
	protos := []byte{6, 17, 1, 47, 6, 17}
	l4len := []int{0, 1, 2, 3, 4, 7, 8, 13, 14, 19, 20, 28, 40}[z.n(13)]
	b := buf[:20+l4len]
	clear(b)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = byte(1 + z.n(128))
	b[9] = protos[z.n(len(protos))]
	binary.BigEndian.PutUint16(b[6:], []uint16{0, 0, 0, 1, 2, 0x2000}[z.n(6)])
	s, d := netip.MustParseAddr(z.addr()).As4(), netip.MustParseAddr(z.addr()).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	l4 := b[20:]
	ports := []uint16{0, 22, 53, 80, 443, 1023, 1024, 40000, 65535}
	if len(l4) >= 4 {
		binary.BigEndian.PutUint16(l4, ports[z.n(len(ports))])
		binary.BigEndian.PutUint16(l4[2:], ports[z.n(len(ports))])
		if b[9] == 1 {
			l4[0], l4[1] = []byte{0, 3, 8, 11, 5}[z.n(5)], byte(z.n(4))
		}
	}
	if len(l4) >= 14 {
		l4[12] = byte(5+z.n(4)) << 4
		l4[13] = z.byte() & 0x3f
	}
	for i := 20; i < len(l4); i++ {
		l4[i] = z.byte()
	}
	return b
}

// differential evaluates packets from z through a linear, a classified and
// a verifying Program of rules and fails on any difference.
func differential(t *testing.T, rules string, z *fuzzBytes, packets int) {
	t.Helper()
	parse := func() *Ruleset {
		rs, err := Parse("fuzz", strings.NewReader(rules))
		if err != nil {
			return nil
		}
		return rs
	}
	rsLin, rsCls, rsVer := parse(), parse(), parse()
	if rsLin == nil {
		return
	}
	lin, err := CompileWith(rsLin, CompileOptions{Linear: true})
	if err != nil {
		return
	}
	cls, err := CompileWith(rsCls, CompileOptions{MinRules: 1})
	if err != nil {
		t.Fatalf("classified compile fails where linear does not: %v", err)
	}
	ver, err := CompileWith(rsVer, CompileOptions{MinRules: 1, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := packet.NewDecoder(packet.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	var buf [64]byte
	var v packet.View
	var cl, cc, cv matchers.Context
	now := time.Unix(1700000000, 0)
	for i := 0; i < packets; i++ {
		dec.Decode(z.packet(buf[:]), &v)
		if v.Class != packet.ClassOK {
			continue
		}
		in, out := z.pick("eth0", "eth1", "ppp0", "", "e"), z.pick("eth0", "eth1", "wg0", "")
		mark := []uint32{0, 1, 2, 3, 0x10, 0xff}[z.n(6)]
		now = now.Add(time.Duration(z.n(4)) * 100 * time.Millisecond)
		res := [3]Result{}
		for k, x := range []struct {
			c *matchers.Context
			p *Program
		}{{&cl, lin}, {&cc, cls}, {&cv, ver}} {
			x.c.Reset()
			x.c.Pkt, x.c.Hook, x.c.Table, x.c.In, x.c.Out, x.c.Mark, x.c.Now = &v, matchers.HookForward, "filter", in, out, mark, now
			func() {
				defer func() {
					if e := recover(); e != nil {
						t.Fatalf("packet %d: %v\nrules:\n%s", i, e, rules)
					}
				}()
				res[k] = x.p.Table("filter").Eval(x.c, nil)
			}()
		}
		for k, c := range []*matchers.Context{&cc, &cv} {
			what := []string{"classified", "verifying"}[k]
			if res[k+1] != res[0] || c.Mark != cl.Mark || c.Hotdrop != cl.Hotdrop || len(c.Events) != len(cl.Events) {
				t.Fatalf("packet %d (%s in %q out %q mark %#x): %s %+v mark %#x hotdrop %v events %d, linear %+v mark %#x hotdrop %v events %d\nrules:\n%s",
					i, describePacket(&cl), in, out, mark, what, res[k+1], c.Mark, c.Hotdrop, len(c.Events), res[0], cl.Mark, cl.Hotdrop, len(cl.Events), rules)
			}
			for j := range c.Events {
				a, b := c.Events[j], cl.Events[j]
				if a.Kind != b.Kind || a.Chain != b.Chain || a.Rule != b.Rule || string(a.Text) != string(b.Text) {
					t.Fatalf("packet %d: %s event %+v, linear %+v", i, what, a, b)
				}
			}
		}
	}
	var a, b, c strings.Builder
	rsLin.Save(&a, SaveOptions{Counters: true})
	rsCls.Save(&b, SaveOptions{Counters: true})
	rsVer.Save(&c, SaveOptions{Counters: true})
	if a.String() != b.String() || a.String() != c.String() {
		t.Fatalf("counters differ:\nlinear:\n%s\nclassified:\n%s\nverifying:\n%s", a.String(), b.String(), c.String())
	}
}

// FuzzClassifier is the differential fuzz test (see above).
func FuzzClassifier(f *testing.F) {
	for seed := 0; seed < 64; seed++ {
		f.Add([]byte(fmt.Sprint("seed", seed)))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		z := &fuzzBytes{b: in}
		rules := z.ruleset()
		differential(t, rules, z, 200)
	})
}

// TestClassifierDifferentialLong runs more random rule sets than the seed
// corpus does, each with many packets.
func TestClassifierDifferentialLong(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 30
	}
	for seed := 0; seed < n; seed++ {
		z := &fuzzBytes{b: []byte(fmt.Sprint("long", seed))}
		differential(t, z.ruleset(), z, 1500)
	}
}

// TestClassifierExactEntries pins which rules the classifier decides from
// their box alone (exact entries, see leafRest.hit): a rule is exact
// only when its match is a box in the leaf fields with no holes and no
// effect but a verdict. Each rule is also run through the differential
// test, with the verifier checking every exact hit in full.
func TestClassifierExactEntries(t *testing.T) {
	tests := []struct {
		rule  string
		exact bool
	}{
		{"-s 10.0.0.0/8 -d 192.168.1.7 -p tcp -m tcp --sport 1024:65535 --dport 80 -j ACCEPT", true},
		{"-p udp -m udp --dport 53 -j DROP", true},
		{"-p tcp -m tcp --dport 0:1023 --sport 80 -j ACCEPT", true},
		{"-d 10.0.0.1 -p tcp -m tcp --sport 1024:65535 --tcp-flags SYN,ACK,FIN,RST,URG,PSH NONE -j ACCEPT", false}, // exact, but the flags are not among this chain's box fields
		{"-m comment --comment x -d 10.0.1.1 -j ACCEPT", true},
		{"-m iprange --src-range 10.0.0.5-10.0.0.200 -j DROP", true},
		{"-p tcp -m tcp ! --dport 0:1023 -j ACCEPT", true}, // one interval: 1024:65535
		{"-p tcp -m tcp --sport 80 -j ACCEPT", true},       // the key is read from 2 bytes, as the match reads it
		{"-p tcp -m multiport --sports 22,80 -j ACCEPT", false},
		{"! -s 10.0.0.0/8 -j DROP", false},                           // two intervals: the hull would hold 10/8
		{"-p udp -m udp ! --dport 53 -j ACCEPT", false},              // a hole
		{"-s 10.0.0.0/255.0.255.0 -j ACCEPT", false},                 // non-contiguous mask: a superset
		{"-i eth0 -p udp -m udp --dport 53 -j ACCEPT", false},        // interfaces are not in the box
		{"-p udp -m udp ! --sport 53 ! --dport 80 -j ACCEPT", false}, // "not both": one 32-bit comparison
		{"-p tcp -m tcp --dport 80 -j RETURN", false},
		{"-p tcp -m tcp --dport 80 -j LOG", false},
		{"-p tcp -m tcp --dport 80 -m limit --limit 1/sec -j ACCEPT", false},
		{"-p tcp -m tcp --dport 80 -m length --length 60 -j ACCEPT", false},
		{"-p tcp -m tcp --dport 80 -m mark --mark 0x1 -j ACCEPT", false},
		{"-p icmp -m icmp --icmp-type 8 -j ACCEPT", false}, // hot-drops short headers
		{"-p tcp -m multiport --dports 22,80 -j ACCEPT", false},
		{"-p tcp -m tcp --tcp-option 2 -j ACCEPT", false},
	}
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, tt := range tests {
		fmt.Fprintf(&b, "-A FORWARD %s\n", tt.rule)
	}
	b.WriteString("COMMIT\n")
	rs, err := Parse("exact", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	p, err := CompileWith(rs, CompileOptions{MinRules: 1})
	if err != nil {
		t.Fatal(err)
	}
	ch := &p.Table("filter").chains[p.Table("filter").builtin[matchers.HookForward]]
	if ch.cls == nil {
		t.Fatal("FORWARD has no classifier")
	}
	for i, tt := range tests {
		// Exact when its leaf entries carry a hit (header entries'
		// rests are empty).
		got := false
		for j, e := range ch.cls.leaves {
			got = got || int(e.ref>>1) == i && ch.cls.rest[j].hit.counters != nil
		}
		if got != tt.exact {
			t.Errorf("%s: exact %v, want %v", tt.rule, got, tt.exact)
		}
	}
	for seed := range 20 {
		differential(t, b.String(), &fuzzBytes{b: []byte(fmt.Sprint("exact", seed))}, 2000)
	}
}
