package matchers

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/qtables/qtables/packet"
)

// Test helpers shared by the match tests: a small option applier standing
// in for the engine's rule parser, and hand-built packets.

// splitArgs splits an option string at spaces; double quotes group words
// (no escapes), enough for the vectors in these tests.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
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

// buildMatch parses the options of match name from args (as on an iptables
// command line after "-m name") and builds them for rule r.
func buildMatch(name string, r Rule, args []string) (Match, error) {
	ext, ok := LookupMatch(name)
	if !ok {
		return nil, fmt.Errorf("no match %q", name)
	}
	mb := ext.New()
	inv := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "!" {
			inv = true
			continue
		}
		if !strings.HasPrefix(a, "--") {
			return nil, fmt.Errorf("bad argument %q", a)
		}
		o, ok := FindOption(ext.Options, a[2:])
		if !ok {
			return nil, fmt.Errorf("unknown option %q", a)
		}
		if inv && !o.Invert {
			return nil, fmt.Errorf("--%s %w", o.Name, ErrInvert)
		}
		if i+o.Args > len(args)-1 {
			return nil, fmt.Errorf("--%s needs %d args", o.Name, o.Args)
		}
		if err := mb.Parse(o.Name, args[i+1:i+1+o.Args], inv); err != nil {
			return nil, err
		}
		i += o.Args
		inv = false
	}
	return mb.Build(&r)
}

func mustBuild(t testing.TB, name string, r Rule, opts string) Match {
	t.Helper()
	m, err := buildMatch(name, r, splitArgs(opts))
	if err != nil {
		t.Fatalf("-m %s %s: %v", name, opts, err)
	}
	return m
}

func saveOf(m Match) string {
	var b strings.Builder
	m.Save(&b)
	return b.String()
}

func listOf(m Match, numeric bool) string {
	var b strings.Builder
	m.List(&b, numeric)
	return b.String()
}

// Rules with a protocol, as -p sets them.
var (
	ruleAny  = Rule{Table: "filter", Chain: "INPUT"}
	ruleTCP  = Rule{Table: "filter", Chain: "INPUT", Proto: packet.ProtoTCP}
	ruleUDP  = Rule{Table: "filter", Chain: "INPUT", Proto: packet.ProtoUDP}
	ruleICMP = Rule{Table: "filter", Chain: "INPUT", Proto: packet.ProtoICMP}
)

// pkt describes a hand-built IPv4 packet.
type pkt struct {
	proto    uint8
	src, dst string // dotted; defaults 10.0.0.1 -> 10.0.0.2
	ttl      uint8
	fragWord uint16 // flags and offset, host order
	pktType  uint8
	l4       []byte // transport header and payload
}

// view builds the packet bytes and a View over them the way the decoder
// would fill it.
func (p pkt) view() *packet.View {
	if p.src == "" {
		p.src = "10.0.0.1"
	}
	if p.dst == "" {
		p.dst = "10.0.0.2"
	}
	if p.ttl == 0 {
		p.ttl = 64
	}
	src, dst := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	n := make([]byte, 20+len(p.l4))
	n[0] = 0x45
	binary.BigEndian.PutUint16(n[2:], uint16(len(n)))
	binary.BigEndian.PutUint16(n[6:], p.fragWord)
	n[8], n[9] = p.ttl, p.proto
	s4, d4 := src.As4(), dst.As4()
	copy(n[12:], s4[:])
	copy(n[16:], d4[:])
	copy(n[20:], p.l4)
	v := &packet.View{
		Class: packet.ClassOK, VLAN: -1, PktType: p.pktType,
		Network: n, Family: 4, Src: src, Dst: dst, Proto: p.proto,
		Len: len(n), TTL: p.ttl,
		IPv4: packet.IPv4Fields{IHL: 5, FragWord: p.fragWord},
		L4:   n[20:],
	}
	return v
}

func ctxFor(v *packet.View) *Context { return &Context{Pkt: v, Hook: HookInput, Table: "filter"} }

// tcpHdr returns a TCP header with the given ports and flags, followed by
// opts (padded to a multiple of 4; data offset set to cover them).
func tcpHdr(sport, dport uint16, flags uint8, opts ...byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	h := make([]byte, 20+len(opts))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12] = byte(len(h)/4) << 4
	h[13] = flags
	copy(h[20:], opts)
	return h
}

func udpHdr(sport, dport uint16) []byte {
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], 8)
	return h
}

func icmpHdr(typ, code uint8) []byte { return []byte{typ, code, 0, 0, 0, 0, 0, 0} }

// matchCase is one packet against one match: the expected result and
// whether the packet must be hot-dropped.
type matchCase struct {
	name    string
	p       pkt
	want    bool
	hotdrop bool
}

func runMatchCases(t *testing.T, m Match, cases []matchCase) {
	t.Helper()
	for _, tc := range cases {
		c := ctxFor(tc.p.view())
		got := m.Match(c)
		if got != tc.want || c.Hotdrop != tc.hotdrop {
			t.Errorf("%s: Match = %v hotdrop %v, want %v hotdrop %v", tc.name, got, c.Hotdrop, tc.want, tc.hotdrop)
		}
	}
}

// fmtVector is one match instance checked against what the installed
// iptables 1.8.9 prints for it (iptables-save, iptables -L -n, iptables -L).
type fmtVector struct {
	proto string // "-p" value of the rule, "" for none
	opts  string // options after "-m NAME"
	save  string // Save output
	listN string // List output with numeric
	list  string // List output without numeric
	// legacy: compare with iptables-legacy, because the nf_tables backend
	// rewrites this rule (e.g. drops an inverted full port range).
	legacy bool
	// dev, when set, says why qtables deliberately differs from iptables
	// 1.8.9 here; the live check skips the vector.
	dev string
}

// errVector is an option string that must be refused; err is a substring
// of the expected error. dev is set when iptables 1.8.9 accepts it.
type errVector struct {
	proto string
	opts  string
	err   string
	dev   string
}

var ruleByProto = map[string]Rule{
	"":        ruleAny,
	"tcp":     ruleTCP,
	"udp":     ruleUDP,
	"icmp":    ruleICMP,
	"!tcp":    {Proto: packet.ProtoTCP, InvProto: true},
	"sctp":    {Proto: protoSCTP},
	"dccp":    {Proto: protoDCCP},
	"udplite": {Proto: protoUDPLite},
	"gre":     {Proto: 47},
}

func runFmtVectors(t *testing.T, name string, vs []fmtVector) {
	t.Helper()
	for _, v := range vs {
		r, ok := ruleByProto[v.proto]
		if !ok {
			t.Fatalf("no rule for proto %q", v.proto)
		}
		m, err := buildMatch(name, r, splitArgs(v.opts))
		if err != nil {
			t.Errorf("-p %s -m %s %s: %v", v.proto, name, v.opts, err)
			continue
		}
		if got := saveOf(m); got != v.save {
			t.Errorf("-m %s %s: Save = %q, want %q", name, v.opts, got, v.save)
		}
		if got := listOf(m, true); got != v.listN {
			t.Errorf("-m %s %s: List(-n) = %q, want %q", name, v.opts, got, v.listN)
		}
		want := v.list
		if want == "" {
			want = v.listN
		}
		if got := listOf(m, false); got != want {
			t.Errorf("-m %s %s: List = %q, want %q", name, v.opts, got, want)
		}
	}
	checkLive(t, name, vs, nil)
}

func runErrVectors(t *testing.T, name string, vs []errVector) {
	t.Helper()
	for _, v := range vs {
		r, ok := ruleByProto[v.proto]
		if !ok {
			t.Fatalf("no rule for proto %q", v.proto)
		}
		_, err := buildMatch(name, r, splitArgs(v.opts))
		if err == nil {
			t.Errorf("-p %s -m %s %s: accepted, want error %q", v.proto, name, v.opts, v.err)
			continue
		}
		if !strings.Contains(err.Error(), v.err) {
			t.Errorf("-p %s -m %s %s: error %q, want it to contain %q", v.proto, name, v.opts, err, v.err)
		}
	}
	checkLive(t, name, nil, vs)
}

// checkLive compares the vectors with the installed iptables when
// QTABLES_LIVE_IPTABLES=1 (root needed). It loads each rule into INPUT of a
// network namespace it creates and deletes; nothing runs in the caller's
// namespace.
func checkLive(t *testing.T, name string, fv []fmtVector, ev []errVector) {
	t.Helper()
	if os.Getenv("QTABLES_LIVE_IPTABLES") != "1" {
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("live iptables check needs root")
	}
	ns := fmt.Sprintf("qt-matchers-%d-%s", os.Getpid(), name)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	run := func(bin string, args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...).CombinedOutput()
		return string(out), err
	}
	ruleArgs := func(proto, opts string) []string {
		a := []string{"-A", "INPUT"}
		if strings.HasPrefix(proto, "!") {
			a = append(a, "!", "-p", proto[1:])
		} else if proto != "" {
			a = append(a, "-p", proto)
		}
		return append(append(a, "-m", name), splitArgs(opts)...)
	}
	for _, v := range fv {
		if v.dev != "" {
			continue
		}
		bin := "iptables"
		if v.legacy {
			bin = "iptables-legacy"
		}
		run(bin, "-F", "INPUT")
		if out, err := run(bin, ruleArgs(v.proto, v.opts)...); err != nil {
			t.Errorf("live %s -m %s %s: refused: %s", bin, name, v.opts, out)
			continue
		}
		save, _ := run(bin+"-save", "-t", "filter")
		got := ""
		for _, l := range strings.Split(save, "\n") {
			if strings.HasPrefix(l, "-A INPUT") {
				if _, after, ok := strings.Cut(l, " -m "+name); ok {
					got = after
				}
			}
		}
		if got != v.save {
			t.Errorf("live %s -m %s %s: iptables-save prints %q, vector says %q", bin, name, v.opts, got, v.save)
		}
		for _, numeric := range []bool{true, false} {
			args, anyAddr, want := []string{"-L", "INPUT"}, "anywhere", v.list
			if numeric || want == "" {
				want = v.listN
			}
			if numeric {
				args, anyAddr = append(args, "-n"), "0.0.0.0/0"
			}
			out, _ := run(bin, args...)
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			l := lines[len(lines)-1]
			i := strings.Index(l, anyAddr)
			j := strings.Index(l[i+len(anyAddr):], anyAddr) + i + len(anyAddr)
			tail := ""
			if j+20 < len(l) {
				tail = l[j+20:]
			}
			if tail != want {
				t.Errorf("live %s -L (numeric %v) -m %s %s: prints %q, vector says %q", bin, numeric, name, v.opts, tail, want)
			}
		}
	}
	for _, v := range ev {
		if v.dev != "" {
			continue
		}
		run("iptables", "-F", "INPUT")
		if out, err := run("iptables", ruleArgs(v.proto, v.opts)...); err == nil {
			t.Errorf("live iptables -m %s %s: accepted (%s), vector says refused", name, v.opts, out)
		}
	}
}
