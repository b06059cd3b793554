package matchers

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qtables/qtables/internal/kerneltest"
	"github.com/qtables/qtables/packet"
)

// Test helpers shared by the match and target tests: an option applier
// standing in for the engine's rule parser, hand-built packets, runners for
// the tables of options with what iptables prints for them, and the live
// comparison of those tables with the installed iptables.

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

// parseOptions feeds option words to parse as the engine's rule parser
// does: "!" inverts the next option and is refused (with ErrInvert) before
// an option that takes none, and each option takes Option.Args words.
func parseOptions(opts []Option, argv []string, parse func(name string, args []string, invert bool) error) error {
	inv := false
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if a == "!" {
			inv = true
			continue
		}
		if !strings.HasPrefix(a, "--") {
			return fmt.Errorf("bad argument %q", a)
		}
		o, ok := FindOption(opts, a[2:])
		if !ok {
			return fmt.Errorf("unknown option %q", a)
		}
		if inv && !o.Invert {
			return fmt.Errorf("--%s %w", o.Name, ErrInvert)
		}
		if i+o.Args > len(argv)-1 {
			return fmt.Errorf("--%s needs %d args", o.Name, o.Args)
		}
		if err := parse(o.Name, argv[i+1:i+1+o.Args], inv); err != nil {
			return err
		}
		i += o.Args
		inv = false
	}
	return nil
}

// buildMatch parses the options of match name from args (as on an iptables
// command line after "-m name") and builds them for rule r.
func buildMatch(name string, r Rule, args ...string) (Match, error) {
	ext, ok := LookupMatch(name)
	if !ok {
		return nil, fmt.Errorf("no match %q", name)
	}
	mb := ext.New()
	if err := parseOptions(ext.Options, args, mb.Parse); err != nil {
		return nil, err
	}
	return mb.Build(&r)
}

// buildTarget is buildMatch for target name (the words after "-j name"),
// applying the registration's table restriction as the engine does.
func buildTarget(name string, r Rule, args ...string) (Target, error) {
	ext, ok := LookupTarget(name)
	if !ok {
		return nil, fmt.Errorf("no target %s", name)
	}
	if r.Table != "" && ext.Tables != nil && !slices.Contains(ext.Tables, r.Table) {
		return nil, fmt.Errorf("%s: not valid in table %s", name, r.Table)
	}
	tb := ext.New()
	if err := parseOptions(ext.Options, args, tb.Parse); err != nil {
		return nil, err
	}
	return tb.Build(&r)
}

func mustBuild(t testing.TB, name string, r Rule, opts string) Match {
	t.Helper()
	m, err := buildMatch(name, r, splitArgs(opts)...)
	if err != nil {
		t.Fatalf("-m %s %s: %v", name, opts, err)
	}
	return m
}

// printer is what matches and targets have in common: their output.
type printer interface {
	Save(b *strings.Builder)
	List(b *strings.Builder, numeric bool)
}

func saveOf(p printer) string {
	var b strings.Builder
	p.Save(&b)
	return b.String()
}

func listOf(p printer, numeric bool) string {
	var b strings.Builder
	p.List(&b, numeric)
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
	list  string // List output without numeric; "" = same as listN
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

func ruleFor(t *testing.T, proto string) Rule {
	t.Helper()
	r, ok := ruleByProto[proto]
	if !ok {
		t.Fatalf("no rule for proto %q", proto)
	}
	return r
}

// runFmtVectors checks Save and List of each vector, then the vectors
// themselves against the installed iptables (checkLive).
func runFmtVectors(t *testing.T, name string, vs []fmtVector) {
	t.Helper()
	var live []liveRule
	for _, v := range vs {
		args := splitArgs(v.opts)
		if v.dev == "" {
			live = append(live, liveRule{legacy: v.legacy, proto: v.proto, ext: append([]string{"-m", name}, args...),
				save: " -m " + name + v.save, listN: v.listN, list: v.list})
		}
		m, err := buildMatch(name, ruleFor(t, v.proto), args...)
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
		if got, want := listOf(m, false), cmp.Or(v.list, v.listN); got != want {
			t.Errorf("-m %s %s: List = %q, want %q", name, v.opts, got, want)
		}
	}
	checkLive(t, live)
}

// runErrVectors checks that each vector is refused with its error, then
// that the installed iptables refuses it too (checkLive).
func runErrVectors(t *testing.T, name string, vs []errVector) {
	t.Helper()
	var live []liveRule
	for _, v := range vs {
		args := splitArgs(v.opts)
		if v.dev == "" {
			live = append(live, liveRule{proto: v.proto, ext: append([]string{"-m", name}, args...), refused: true})
		}
		_, err := buildMatch(name, ruleFor(t, v.proto), args...)
		if err == nil {
			t.Errorf("-p %s -m %s %s: accepted, want error %q", v.proto, name, v.opts, v.err)
			continue
		}
		if !strings.Contains(err.Error(), v.err) {
			t.Errorf("-p %s -m %s %s: error %q, want it to contain %q", v.proto, name, v.opts, err, v.err)
		}
	}
	checkLive(t, live)
}

// targetCase is one input of a target with what the installed iptables
// 1.8.9 (nf_tables) prints for it: iptables-save's text after "-j NAME",
// and `iptables -L -n` / `iptables -L` text after the destination column.
// An empty listN means the input must be refused.
type targetCase struct {
	rule  Rule
	args  string
	argv  []string // the option words, when args cannot carry them
	save  string
	listN string
	list  string // "" = same as listN
}

func (tc targetCase) words() []string {
	if tc.argv != nil {
		return tc.argv
	}
	return splitArgs(tc.args)
}

// runTargetCases checks Save and List of each case (or its refusal), then
// the cases themselves against the installed iptables (checkLive).
func runTargetCases(t *testing.T, name string, cases []targetCase) {
	t.Helper()
	var live []liveRule
	for _, tc := range cases {
		lr := liveRule{table: tc.rule.Table, chain: tc.rule.Chain, ext: append([]string{"-j", name}, tc.words()...),
			refused: tc.listN == "", save: " -j " + name + tc.save, listN: tc.listN, list: tc.list}
		if tc.rule.Proto != 0 {
			lr.proto = map[uint8]string{packet.ProtoTCP: "tcp", packet.ProtoUDP: "udp"}[tc.rule.Proto]
			if tc.rule.InvProto {
				lr.proto = "!" + lr.proto
			}
		}
		live = append(live, lr)
		t.Run(tc.args, func(t *testing.T) {
			tg, err := buildTarget(name, tc.rule, tc.words()...)
			if tc.listN == "" {
				if err == nil {
					t.Fatalf("-j %s %s: accepted, iptables refuses it", name, tc.args)
				}
				return
			}
			if err != nil {
				t.Fatalf("-j %s %s: %v", name, tc.args, err)
			}
			if save := saveOf(tg); save != tc.save {
				t.Errorf("Save = %q, iptables-save prints %q", save, tc.save)
			}
			if listN := listOf(tg, true); listN != tc.listN {
				t.Errorf("List(-n) = %q, iptables -L -n prints %q", listN, tc.listN)
			}
			if list, want := listOf(tg, false), cmp.Or(tc.list, tc.listN); list != want {
				t.Errorf("List = %q, iptables -L prints %q", list, want)
			}
		})
	}
	checkLive(t, live)
}

// ---- live comparison with the installed iptables ----

// liveRule is one rule for the installed iptables and what it must print.
type liveRule struct {
	// legacy loads the rule with iptables-legacy, for rules the nf_tables
	// backend rewrites.
	legacy       bool
	table, chain string   // "" = filter, INPUT
	proto        string   // -p value, "!tcp" for an inverted one, "" for none
	ext          []string // the extension's words: "-m", "tcp", "--dport", "22"
	refused      bool     // iptables must refuse the rule
	save         string   // iptables-save's text after "-A CHAIN [! -p P]"
	listN, list  string   // -L -n and -L text after the destination column
}

// checkLive loads each rule into the installed iptables in a network
// namespace of its own and compares what iptables-save and iptables -L
// [-n] print with the rule's expectations, or checks that iptables refuses
// it. It runs as the subtest "iptables", which is skipped (failed under CI)
// where the kernel test cannot run.
func checkLive(t *testing.T, rules []liveRule) {
	t.Helper()
	if len(rules) == 0 {
		return
	}
	t.Run("iptables", func(t *testing.T) {
		tools := []string{"ip", "iptables", "iptables-save"}
		if slices.ContainsFunc(rules, func(r liveRule) bool { return r.legacy }) {
			tools = append(tools, "iptables-legacy", "iptables-legacy-save")
		}
		kerneltest.Require(t, tools...)
		ns := newLiveNS(t)
		for _, r := range rules {
			ns.check(t, r)
		}
	})
}

// liveNSPrefix starts the name of every namespace these tests create; the
// test binary's PID follows, so that stale namespaces of a killed run can
// be told from those of a running one.
const liveNSPrefix = "qt-matchers-"

// liveNS is a network namespace for comparisons with the installed
// iptables. Nothing is ever run in the test's own namespace.
type liveNS struct{ name string }

// newLiveNS creates a namespace for t, named after the PID and the test,
// and deletes it when t ends, however it ends (cleanups also run after a
// failure or a panic in the test). A namespace left by an earlier run that
// was killed is deleted first.
func newLiveNS(t *testing.T) *liveNS {
	t.Helper()
	removeStaleNS()
	name := liveNSPrefix + strconv.Itoa(os.Getpid()) + "-" + strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return &liveNS{name}
}

// removeStaleNS deletes the namespaces of test binaries that are gone.
func removeStaleNS() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), liveNSPrefix)
		if !ok {
			continue
		}
		pidS, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidS)
		if err != nil || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// run runs bin with args in the namespace and returns its standard output;
// the error carries its standard error (where iptables also prints
// warnings, which must not mix with the listing).
func (ns *liveNS) run(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name, bin}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

var builtinChains = []string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// check loads r alone into its chain and compares.
func (ns *liveNS) check(t *testing.T, r liveRule) {
	t.Helper()
	bin, table, chain := "iptables", cmp.Or(r.table, "filter"), cmp.Or(r.chain, "INPUT")
	if r.legacy {
		bin = "iptables-legacy"
	}
	if !slices.Contains(builtinChains, chain) {
		ns.run(bin, "-t", table, "-N", chain) // fails when it exists: fine
	}
	if _, err := ns.run(bin, "-t", table, "-F", chain); err != nil {
		t.Fatalf("%s -t %s -F %s: %v", bin, table, chain, err)
	}
	args, line := []string{"-t", table, "-A", chain}, "-A "+chain
	if p, inv := strings.CutPrefix(r.proto, "!"); p != "" {
		if inv {
			args, line = append(args, "!"), line+" !"
		}
		args, line = append(args, "-p", p), line+" -p "+p
	}
	args = append(args, r.ext...)
	desc := bin + " " + strings.Join(args, " ")
	_, err := ns.run(bin, args...)
	if r.refused {
		if err == nil {
			t.Errorf("%s: the installed iptables accepts it, the test expects a refusal", desc)
		}
		return
	}
	if err != nil {
		t.Errorf("%s: the installed iptables refuses it: %v", desc, err)
		return
	}
	dump, err := ns.run(bin+"-save", "-t", table)
	if err != nil {
		t.Fatalf("%s-save: %v", bin, err)
	}
	var got []string
	for _, l := range strings.Split(dump, "\n") {
		if l == "-A "+chain || strings.HasPrefix(l, "-A "+chain+" ") {
			got = append(got, l)
		}
	}
	if want := line + r.save; len(got) != 1 || got[0] != want {
		t.Errorf("%s:\n iptables-save: %q\n  the test says %q", desc, got, want)
	}
	for _, numeric := range []bool{true, false} {
		largs, want := []string{"-t", table, "-L", chain}, cmp.Or(r.list, r.listN)
		if numeric {
			largs, want = append(largs, "-n"), r.listN
		}
		out, err := ns.run(bin, largs...)
		if err != nil {
			t.Fatalf("%s %s: %v", bin, strings.Join(largs, " "), err)
		}
		if tail := listTail(out); tail != want {
			t.Errorf("%s: %s %s prints %q after the destination, the test says %q", desc, bin, strings.Join(largs, " "), tail, want)
		}
	}
}

// listTail returns what `iptables -L` printed for the last rule of a chain
// after the destination column: the matches' and the target's text. The
// columns before it are target (blank without one), prot, opt, source and
// destination; each is padded, but a longer value (prot "udplite") shifts
// the rest, so they are found by their words. The destination is printed
// as "%-19s ".
func listTail(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 3 {
		return "(no rule listed)"
	}
	l := lines[len(lines)-1]
	words := 5 // target prot opt source destination
	if strings.HasPrefix(l, " ") {
		words = 4
	}
	i, start := 0, 0
	for ; words > 0; words-- {
		for i < len(l) && l[i] == ' ' {
			i++
		}
		start = i
		for i < len(l) && l[i] != ' ' {
			i++
		}
	}
	if end := start + max(i-start, 19) + 1; end <= len(l) {
		return l[end:]
	}
	return ""
}
