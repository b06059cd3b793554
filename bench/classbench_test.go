package bench

import (
	"bufio"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
)

// The first-match tests compare the engine with a brute-force linear
// evaluation written here from the ClassBench format's definition, over
// the ClassBench lines themselves: the test parses the file on its own and
// shares neither the parser nor the match logic with package bench.

// cbRule is a ClassBench filter as the brute force reads it: ranges.
type cbRule struct {
	srcLo, srcHi, dstLo, dstHi uint32
	spLo, spHi, dpLo, dpHi     int
	proto                      int // -1: any
}

func rangeOfPrefix(t *testing.T, s string) (uint32, uint32) {
	t.Helper()
	addr, bits, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(bits)
	if !ok || err != nil || n < 0 || n > 32 {
		t.Fatalf("bad prefix %q", s)
	}
	var a uint32
	parts := strings.Split(addr, ".")
	if len(parts) != 4 {
		t.Fatalf("bad address %q", s)
	}
	for _, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || v > 255 {
			t.Fatalf("bad address %q", s)
		}
		a = a<<8 | uint32(v)
	}
	if n == 0 {
		return 0, 0xffffffff
	}
	mask := uint32(0xffffffff) << (32 - n)
	return a & mask, a&mask | ^mask
}

// readCB parses a ClassBench file: tab-separated fields, "@" before the
// source, "lo : hi" port ranges, "proto/mask" in hex.
func readCB(t *testing.T, path string) []cbRule {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []cbRule
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\t\r\n ")
		if line == "" {
			continue
		}
		fields := strings.Split(strings.TrimPrefix(line, "@"), "\t")
		if len(fields) < 5 {
			t.Fatalf("%s: short line %q", path, line)
		}
		var r cbRule
		r.srcLo, r.srcHi = rangeOfPrefix(t, fields[0])
		r.dstLo, r.dstHi = rangeOfPrefix(t, fields[1])
		ports := func(s string) (int, int) {
			var lo, hi int
			if _, err := fmtSscan(s, &lo, &hi); err != nil {
				t.Fatalf("%s: bad port range %q", path, s)
			}
			return lo, hi
		}
		r.spLo, r.spHi = ports(fields[2])
		r.dpLo, r.dpHi = ports(fields[3])
		pv, pm, _ := strings.Cut(fields[4], "/")
		v, _ := strconv.ParseUint(strings.TrimPrefix(pv, "0x"), 16, 8)
		m, _ := strconv.ParseUint(strings.TrimPrefix(pm, "0x"), 16, 8)
		r.proto = -1
		if m == 0xff {
			r.proto = int(v)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fmtSscan reads "lo : hi".
func fmtSscan(s string, lo, hi *int) (int, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, strconv.ErrSyntax
	}
	var err error
	if *lo, err = strconv.Atoi(strings.TrimSpace(a)); err != nil {
		return 0, err
	}
	if *hi, err = strconv.Atoi(strings.TrimSpace(b)); err != nil {
		return 1, err
	}
	return 2, nil
}

type cbPacket struct {
	src, dst     uint32
	proto        int
	sport, dport int
}

func (r *cbRule) matches(p cbPacket) bool {
	if p.src < r.srcLo || p.src > r.srcHi || p.dst < r.dstLo || p.dst > r.dstHi {
		return false
	}
	if r.proto >= 0 && p.proto != r.proto {
		return false
	}
	// Only TCP and UDP packets have ports (the kernel's tcp and udp
	// matches); a port range narrower than 0..65535 excludes the rest.
	hasPorts := p.proto == 6 || p.proto == 17
	if !(r.spLo == 0 && r.spHi == 65535) && (!hasPorts || p.sport < r.spLo || p.sport > r.spHi) {
		return false
	}
	if !(r.dpLo == 0 && r.dpHi == 65535) && (!hasPorts || p.dport < r.dpLo || p.dport > r.dpHi) {
		return false
	}
	return true
}

func bruteForce(rules []cbRule, p cbPacket) int {
	for i := range rules {
		if rules[i].matches(p) {
			return i
		}
	}
	return -1
}

// ruleToFilter numbers the iptables rules of a converted set by filter,
// from the conversion's documented rule: one rule per filter, two (TCP,
// UDP) for an any-protocol filter with ports, none for a filter of another
// protocol with ports.
func ruleToFilter(rules []cbRule) []int {
	var out []int
	for i, r := range rules {
		ports := !(r.spLo == 0 && r.spHi == 65535) || !(r.dpLo == 0 && r.dpHi == 65535)
		switch {
		case !ports || r.proto == 6 || r.proto == 17:
			out = append(out, i)
		case r.proto == -1:
			out = append(out, i, i)
		}
	}
	return out
}

// crossPackets builds packets that mix the fields of random filters (the
// source of one, the destination of another, ports of a third), the
// packets on which first match is easiest to get wrong.
func crossPackets(rules []cbRule, n int, seed uint64) []cbPacket {
	r := rand.New(rand.NewPCG(seed, 7))
	in := func(lo, hi uint32) uint32 { return lo + uint32(r.Uint64N(uint64(hi-lo)+1)) }
	inP := func(lo, hi int) int { return lo + r.IntN(hi-lo+1) }
	var out []cbPacket
	for i := 0; i < n; i++ {
		a, b, c := &rules[r.IntN(len(rules))], &rules[r.IntN(len(rules))], &rules[r.IntN(len(rules))]
		p := cbPacket{src: in(a.srcLo, a.srcHi), dst: in(b.dstLo, b.dstHi), proto: c.proto,
			sport: inP(c.spLo, c.spHi), dport: inP(b.dpLo, b.dpHi)}
		if p.proto < 0 {
			p.proto = []int{6, 17, 1}[r.IntN(3)]
		}
		out = append(out, p)
	}
	return out
}

func cbToTuple(p cbPacket) Tuple {
	t := Tuple{Src: addrFrom(p.src), Dst: addrFrom(p.dst), Proto: uint8(p.proto)}
	if p.proto == 6 || p.proto == 17 {
		t.HasPorts, t.SPort, t.DPort = true, uint16(p.sport), uint16(p.dport)
	}
	return t
}

func tupleToCB(t Tuple) cbPacket {
	return cbPacket{src: addrBits(t.Src), dst: addrBits(t.Dst), proto: int(t.Proto), sport: int(t.SPort), dport: int(t.DPort)}
}

// checkClassBench converts the ClassBench file at path, evaluates generated
// traffic (aimed at every filter, plus misses) and cross packets through
// the engine and compares each answer with the brute force.
func checkClassBench(t *testing.T, path string, actions string) {
	rules := readCB(t, path)
	fs, err := LoadClassBench(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != len(rules) {
		t.Fatalf("bench read %d filters, the test %d", len(fs), len(rules))
	}
	text, order, _, err := ClassBenchRules(fs, actions, EmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := engine.Parse(path, strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	r2f := ruleToFilter(rules)
	if n := len(rs.Table("filter").Chain("FORWARD").Rules); n != len(r2f) {
		t.Fatalf("converted set has %d rules, the conversion rule says %d", n, len(r2f))
	}
	tr := DefaultTraffic()
	pkts := tr.Generate(order)
	for _, p := range crossPackets(rules, 5000, 3) {
		tu := cbToTuple(p)
		pkts = append(pkts, Packet{Time: Start, Frame: EncodeFrame(&tu, 60, 0), Tuple: tu, Aim: -1})
	}
	w, err := NewWorkload(rs, "filter", "FORWARD", "", "", FramesOf(pkts))
	if err != nil {
		t.Fatal(err)
	}
	if w.Packets() != len(pkts) {
		t.Fatalf("%d of %d packets evaluated (skipped %v)", w.Packets(), len(pkts), w.Skipped)
	}
	results := w.Decide()
	bad := 0
	hit := map[int]bool{}
	for i, res := range results {
		p := tupleToCB(pkts[w.Index[i]].Tuple)
		want := bruteForce(rules, p)
		got := -1
		if res.Rule > 0 {
			if res.Chain != "FORWARD" || res.Rule > len(r2f) {
				t.Fatalf("packet %d decided by %s:%d", i, res.Chain, res.Rule)
			}
			got = r2f[res.Rule-1]
		}
		if got >= 0 {
			hit[got] = true
		}
		// The verdict follows from the filter too.
		wantV := matchers.Drop // the policy
		if want >= 0 && (actions != "alternate" || want%2 == 0) {
			wantV = matchers.Accept
		}
		if got != want || res.Verdict != wantV {
			if bad++; bad <= 5 {
				t.Errorf("packet %d %+v: engine %s:%d (filter %d, %v), brute force filter %d (%v)", i, p, res.Chain, res.Rule, got, res.Verdict, want, wantV)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d packets disagree", bad, len(results))
	}
	// The traffic must exercise the set, not just its first rules.
	if len(hit) < len(rules)/3 {
		t.Errorf("only %d of %d filters decided a packet", len(hit), len(rules))
	}
	t.Logf("%s: %d packets agree, %d filters decided packets", filepath.Base(path), len(results), len(hit))
}

const sharedClassBench = "../../shared/classbench"

func TestClassBenchFirstMatchShared(t *testing.T) {
	if _, err := os.Stat(sharedClassBench); err != nil {
		t.Skipf("skipping: %s not found (the shared ClassBench sets live next to the project; this test runs where they are)", sharedClassBench)
	}
	names := []string{"acl1_1k", "fw1_1k", "ipc1_1k"}
	// The 10k sets take a minute under the race detector: opt in.
	if os.Getenv("QTABLES_CLASSBENCH_10K") != "" {
		names = append(names, "acl1_10k", "fw1_10k", "ipc1_10k")
	}
	for _, name := range names {
		for _, actions := range []string{"accept", "alternate"} {
			t.Run(name+"/"+actions, func(t *testing.T) {
				checkClassBench(t, filepath.Join(sharedClassBench, name), actions)
			})
		}
	}
}

// writeCB writes filters in ClassBench's format, as the test reads them.
func writeCB(t *testing.T, fs []Filter) string {
	var b strings.Builder
	for _, f := range fs {
		proto := "0x00/0x00"
		if f.Proto != 0 {
			proto = "0x" + strconv.FormatUint(uint64(f.Proto), 16) + "/0xFF"
		}
		b.WriteString("@" + f.Src.String() + "\t" + f.Dst.String() + "\t" +
			strconv.Itoa(int(f.SPort.Lo)) + " : " + strconv.Itoa(int(f.SPort.Hi)) + "\t" +
			strconv.Itoa(int(f.DPort.Lo)) + " : " + strconv.Itoa(int(f.DPort.Hi)) + "\t" +
			proto + "\t0x0000/0x0000\t\n")
	}
	path := filepath.Join(t.TempDir(), "set")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestClassBenchFirstMatchGenerated runs the same check on generated sets
// of every family, written out in ClassBench's format, plus hand-made
// filters for the conversion's corner cases.
func TestClassBenchFirstMatchGenerated(t *testing.T) {
	for _, kind := range []string{"acl", "fw", "ipc"} {
		for _, n := range []int{10, 300} {
			t.Run(kind+"/"+strconv.Itoa(n), func(t *testing.T) {
				fs, err := GenerateFilters(RuleSpec{Kind: kind, Rules: n, Seed: uint64(n), Actions: "accept"})
				if err != nil {
					t.Fatal(err)
				}
				checkClassBench(t, writeCB(t, fs), "alternate")
			})
		}
	}
	t.Run("corners", func(t *testing.T) {
		pf := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
		fs := []Filter{
			// Any protocol with a port range: two rules.
			{Src: pf("10.0.0.0/8"), Dst: pf("0.0.0.0/0"), SPort: AnyPort, DPort: PortRange{80, 80}},
			// GRE with a port range: never matches, left out.
			{Src: pf("0.0.0.0/0"), Dst: pf("0.0.0.0/0"), SPort: AnyPort, DPort: PortRange{1, 2}, Proto: 47},
			{Src: pf("10.1.0.0/16"), Dst: pf("192.0.2.0/24"), SPort: PortRange{1024, 65535}, DPort: AnyPort, Proto: 17},
			{Src: pf("0.0.0.0/1"), Dst: pf("128.0.0.0/1"), SPort: AnyPort, DPort: AnyPort, Proto: 1},
			{Src: pf("10.0.0.0/8"), Dst: pf("0.0.0.0/0"), SPort: AnyPort, DPort: PortRange{0, 1023}, Proto: 6},
			{Src: pf("0.0.0.0/0"), Dst: pf("0.0.0.0/0"), SPort: AnyPort, DPort: AnyPort, Proto: 47},
		}
		checkClassBench(t, writeCB(t, fs), "alternate")
	})
}

func TestParseClassBenchErrors(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF", "must start with '@'"},
		{"@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0x06/0xFF", "want"},
		{"@10.0.0.0/33\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF", "source"},
		{"@10.0.0.0/8\t0.0.0.0/0\t9 : 8\t0 : 65535\t0x06/0xFF", "source ports"},
		{"@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 70000\t0x06/0xFF", "destination ports"},
		{"@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xF0", "mask must be"},
		{"@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0xFF", "protocol 0"},
	} {
		_, err := ParseClassBench("f", strings.NewReader(tc.line+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "f:1:") {
			t.Errorf("%q: got %v, want an error at f:1 containing %q", tc.line, err, tc.want)
		}
	}
	fs, err := ParseClassBench("f", strings.NewReader("@1.2.3.5/24\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x1000/0x1000\t\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Filter{Src: netip.MustParsePrefix("1.2.3.0/24"), Dst: netip.MustParsePrefix("0.0.0.0/0"), SPort: AnyPort, DPort: PortRange{80, 80}, Proto: 6, Accept: true}
	if len(fs) != 1 || fs[0] != want {
		t.Fatalf("got %+v, want %+v", fs, want)
	}
}
