package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/qtables/qtables/engine"
)

const userRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:WEB - [0:0]
:DNS - [0:0]
-A FORWARD -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT
-A FORWARD -d 192.0.2.0/24 -p tcp -j WEB
-A FORWARD -p udp -m udp --dport 53 -j DNS
-A FORWARD ! -s 10.0.0.0/8 -p icmp -j DROP
-A FORWARD -i eth0 -j ACCEPT
-A WEB -p tcp -m multiport --dports 80,443 -j ACCEPT
-A WEB -p udp -j ACCEPT
-A WEB -s 10.9.0.0/16 -p tcp -m tcp --sport 1024:65535 -j DROP
-A DNS -d 198.51.100.53/32 -j ACCEPT
COMMIT
`

func loadRules(t testing.TB, text string) *engine.Ruleset {
	t.Helper()
	rs, err := engine.Parse("rules", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestFiltersFromRules(t *testing.T) {
	rs := loadRules(t, userRules)
	fs, err := FiltersFromRules(rs, "filter", "FORWARD")
	if err != nil {
		t.Fatal(err)
	}
	pf := netip.MustParsePrefix
	any := pf("0.0.0.0/0")
	want := []Filter{
		{Src: pf("10.0.0.0/8"), Dst: any, Proto: 6, SPort: AnyPort, DPort: PortRange{22, 22}, Accept: true, Ref: RuleRef{"FORWARD", 1}},
		// WEB, narrowed by the jump's -d and -p.
		{Src: any, Dst: pf("192.0.2.0/24"), Proto: 6, SPort: AnyPort, DPort: PortRange{80, 80}, Accept: true, Ref: RuleRef{"WEB", 1}, Orig: 1},
		// WEB 2 (-p udp) contradicts the jump's -p tcp: skipped.
		{Src: pf("10.9.0.0/16"), Dst: pf("192.0.2.0/24"), Proto: 6, SPort: PortRange{1024, 65535}, DPort: AnyPort, Ref: RuleRef{"WEB", 3}, Orig: 2},
		{Src: any, Dst: pf("198.51.100.53/32"), Proto: 17, SPort: AnyPort, DPort: PortRange{53, 53}, Accept: true, Ref: RuleRef{"DNS", 1}, Orig: 3},
		// The inverted -s is left out.
		{Src: any, Dst: any, Proto: 1, SPort: AnyPort, DPort: AnyPort, Ref: RuleRef{"FORWARD", 4}, Orig: 4},
		{Src: any, Dst: any, SPort: AnyPort, DPort: AnyPort, Accept: true, Ref: RuleRef{"FORWARD", 5}, Orig: 5},
	}
	if len(fs) != len(want) {
		t.Fatalf("got %d filters: %+v", len(fs), fs)
	}
	for i := range want {
		if fs[i] != want[i] {
			t.Errorf("filter %d:\n got %+v\nwant %+v", i, fs[i], want[i])
		}
	}
}

func TestReachableAndTruncate(t *testing.T) {
	rs := loadRules(t, userRules)
	tb := rs.Table("filter")
	if n := Reachable(tb, "FORWARD"); n != 5+3+1 {
		t.Fatalf("reachable %d, want 9", n)
	}
	for _, tc := range []struct{ n, keep, reach int }{
		{1, 1, 1}, {4, 1, 1}, {5, 2, 5}, {6, 2, 5}, {7, 3, 7}, {8, 4, 8}, {100, 5, 9},
	} {
		cp, err := Truncate(rs, "filter", "FORWARD", tc.n)
		if err != nil {
			t.Fatal(err)
		}
		ct := cp.Table("filter")
		if k := len(ct.Chain("FORWARD").Rules); k != tc.keep {
			t.Errorf("truncate to %d: %d FORWARD rules kept, want %d", tc.n, k, tc.keep)
		}
		if r := Reachable(ct, "FORWARD"); r != tc.reach {
			t.Errorf("truncate to %d: %d reachable, want %d", tc.n, r, tc.reach)
		}
	}
	if len(tb.Chain("FORWARD").Rules) != 5 {
		t.Error("Truncate changed its input")
	}
}

func testFrames(t testing.TB) []Frame {
	mk := func(src, dst string, proto uint8, sport, dport uint16) Tuple {
		return Tuple{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: proto, SPort: sport, DPort: dport, HasPorts: proto == 6 || proto == 17}
	}
	tuples := []Tuple{
		mk("10.1.1.1", "192.0.2.1", 6, 40000, 22),   // FORWARD:1
		mk("172.16.1.1", "192.0.2.1", 6, 40000, 80), // FORWARD:2 -> WEB:1
		mk("172.16.1.1", "192.0.2.1", 6, 40000, 81), // WEB 1..3 miss, FORWARD 3..5, policy
		mk("172.16.1.1", "198.51.100.53", 17, 5353, 53),
	}
	var fr []Frame
	for i := range tuples {
		fr = append(fr, Frame{Data: EncodeFrame(&tuples[i], 0, 0), LinkType: 1, Time: Start})
	}
	// An ARP frame and a TTL-1 packet: skipped.
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	fr = append(fr, Frame{Data: arp, LinkType: 1, Time: Start})
	ttl1 := EncodeFrame(&tuples[0], 0, 0)
	ttl1[14+8] = 1
	ttl1[14+10], ttl1[14+11] = 0, 0
	sum := ^onesSum(0, ttl1[14:34])
	ttl1[14+10], ttl1[14+11] = byte(sum>>8), byte(sum)
	fr = append(fr, Frame{Data: ttl1, LinkType: 1, Time: Start})
	return fr
}

func TestWorkloadDecideAndProfile(t *testing.T) {
	rs := loadRules(t, userRules)
	w, err := NewWorkload(rs, "filter", "FORWARD", "", "eth1", testFrames(t))
	if err != nil {
		t.Fatal(err)
	}
	if w.Packets() != 4 || w.Skipped["non-ip"] != 1 || w.Skipped["ttl-expired"] != 1 {
		t.Fatalf("packets %d, skipped %v", w.Packets(), w.Skipped)
	}
	var got []string
	for _, r := range w.Decide() {
		got = append(got, engine.RuleRef(r))
	}
	want := []string{"FORWARD:1", "WEB:1", "FORWARD:policy", "DNS:1"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("decided by %v, want %v", got, want)
	}
	p := w.Profile(time.Second)
	if p.Packets != 4 || p.Policy["FORWARD"] != 1 {
		t.Fatalf("profile %+v", p)
	}
	// Visits worked out by hand from the rule set and the four packets.
	visits := map[string][2]uint64{ // rule: visits, hits
		"FORWARD:1": {4, 1}, "FORWARD:2": {3, 2}, "FORWARD:3": {2, 1}, "FORWARD:4": {1, 0}, "FORWARD:5": {1, 0},
		"WEB:1": {2, 1}, "WEB:2": {1, 0}, "WEB:3": {1, 0}, "DNS:1": {1, 1},
	}
	var total uint64
	for _, v := range visits {
		total += v[0]
	}
	if p.VisitsPerPacket != float64(total)/4 {
		t.Errorf("visits per packet %v, want %v", p.VisitsPerPacket, float64(total)/4)
	}
	for _, r := range p.Rules {
		v := visits[r.Ref.String()]
		if r.Visits != v[0] || r.Hits != v[1] || r.Share != float64(v[0])/float64(total) {
			t.Errorf("%s: visits %d hits %d share %v, want %d %d %v", r.Ref, r.Visits, r.Hits, r.Share, v[0], v[1], float64(v[0])/float64(total))
		}
	}
	if top := p.Top(2); len(top) != 2 || top[0].Ref.String() != "FORWARD:1" || top[1].Ref.String() != "FORWARD:2" {
		t.Errorf("top 2: %+v", top)
	}
}

func TestWorkloadErrors(t *testing.T) {
	rs := loadRules(t, userRules)
	for _, tc := range []struct {
		table, chain, in, out string
		want                  string
	}{
		{"nat", "FORWARD", "", "", "no nat table"},
		{"filter", "WEB", "", "", "not a built-in chain"},
		{"filter", "OUTPUT", "eth0", "", "no input interface"},
		{"filter", "INPUT", "", "eth0", "no output interface"},
	} {
		if _, err := NewWorkload(rs, tc.table, tc.chain, tc.in, tc.out, testFrames(t)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v", tc, err)
		}
	}
	arp := testFrames(t)[4:5]
	if _, err := NewWorkload(rs, "filter", "FORWARD", "", "", arp); err == nil || !strings.Contains(err.Error(), "none of the 1 packets") {
		t.Errorf("only ARP: got %v", err)
	}
}

func TestMeasure(t *testing.T) {
	rs, fs, ps, err := Generated(RuleSpec{Kind: "fw", Rules: 200, Seed: 1, Actions: "accept", Policy: "DROP"}, "FORWARD", TrafficSpec{Packets: 2000, Flow: 4, Active: 8, Miss: 0.1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorkload(rs, "filter", "FORWARD", "", "", FramesOf(ps))
	if err != nil {
		t.Fatal(err)
	}
	if chk := CheckFirstMatch(fs, w.Tuples(), w.Decide()); chk.Agree != chk.Packets || chk.Packets != 2000 {
		t.Fatalf("first match: %+v", chk)
	}
	for _, workers := range []int{1, 3} {
		m, err := w.Measure(context.Background(), Config{Duration: 50 * time.Millisecond, Workers: workers, SampleShift: 2})
		if err != nil {
			t.Fatal(err)
		}
		if m.Workers != workers || m.Packets == 0 || m.PPS <= 0 || m.NsPerPacket <= 0 || m.Samples == 0 || m.P99 < m.P50 {
			t.Errorf("workers %d: %+v", workers, m)
		}
		if d := m.PPSPerCore*float64(workers) - m.PPS; d > 1 || d < -1 {
			t.Errorf("pps per core %v x %d != pps %v", m.PPSPerCore, workers, m.PPS)
		}
		// The evaluation loop must not allocate; allow for the runtime's
		// own rare allocations during the run.
		if m.AllocsPerPacket > 0.01 {
			t.Errorf("workers %d: %.4f allocations per packet", workers, m.AllocsPerPacket)
		}
		if m.Elapsed < 50*time.Millisecond || m.Elapsed > 2*time.Second {
			t.Errorf("elapsed %v for a 50ms run", m.Elapsed)
		}
	}
	// A cancelled context ends the run early, with an error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Measure(ctx, Config{Duration: time.Minute}); err == nil {
		t.Error("cancelled run: no error")
	}
}

func TestSpread(t *testing.T) {
	rs := loadRules(t, userRules)
	fs, _ := FiltersFromRules(rs, "filter", "FORWARD")
	tuples := []Tuple{
		{Src: netip.MustParseAddr("10.1.1.1"), Dst: netip.MustParseAddr("192.0.2.1"), Proto: 6, SPort: 4000, DPort: 22, HasPorts: true},
		{Src: netip.MustParseAddr("10.9.1.1"), Dst: netip.MustParseAddr("192.0.2.1"), Proto: 6, SPort: 4000, DPort: 22, HasPorts: true},
		{Src: netip.MustParseAddr("1.1.1.1"), Dst: netip.MustParseAddr("2.2.2.2"), Proto: 6, SPort: 4000, DPort: 9, HasPorts: true},
	}
	ps := []Packet{
		{Tuple: tuples[0], Aim: 0},  // decided by FORWARD:1, its aim
		{Tuple: tuples[1], Aim: 2},  // aimed at WEB:3, caught by FORWARD:1
		{Tuple: tuples[2], Aim: -1}, // a miss: the policy
	}
	for i := range ps {
		ps[i].Frame, ps[i].Time = EncodeFrame(&ps[i].Tuple, 0, 0), Start
	}
	w, err := NewWorkload(rs, "filter", "FORWARD", "", "", FramesOf(ps))
	if err != nil {
		t.Fatal(err)
	}
	s := SpreadOf(fs, ps, w.Index, w.Decide())
	want := Spread{Aimed: 2, ByAim: 1, ByEarlier: 1, MissAimed: 1, Missed: 1, RulesHit: 1, Filters: 6, TopTenthShare: 1}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
}

func TestPlotSVG(t *testing.T) {
	p := &Plot{Title: "t <1>", XLabel: "rules", YLabel: "pps", Series: []Series{
		{Name: "1 worker", X: []float64{10, 100, 1000, 10000}, Y: []float64{5e6, 2e6, 3e5, 2e4}},
		{Name: "2 workers", X: []float64{10, 100}, Y: []float64{9e6, 4e6}},
	}}
	var b bytes.Buffer
	if err := p.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&b)
	var polylines, circles int
	var texts []string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			switch el.Name.Local {
			case "polyline":
				polylines++
			case "circle":
				circles++
			}
		case xml.CharData:
			texts = append(texts, string(el))
		}
	}
	if polylines != 2 || circles != 6 {
		t.Errorf("%d lines, %d points", polylines, circles)
	}
	all := strings.Join(texts, "|")
	// Decade ticks on both axes (y spans more than two decades: log).
	for _, want := range []string{"|10|", "|100|", "|1k|", "|10k|", "|10M|", "t <1>", "pps (log)", "rules (log)"} {
		if !strings.Contains("|"+all+"|", want) {
			t.Errorf("no %q in %q", want, all)
		}
	}
	if err := (&Plot{}).WriteSVG(io.Discard); err == nil {
		t.Error("empty plot: no error")
	}
}

// TestMeasureCompile: the compiled size is the Workload's own Program's,
// it grows with the rules, the time is positive, and the run count keeps
// to what was asked and to the budget.
func TestMeasureCompile(t *testing.T) {
	var prev CompileStats
	for _, n := range []int{10, 1000} {
		rs, _, ps, err := Generated(RuleSpec{Kind: "acl", Rules: n, Seed: 1, Actions: "accept", Policy: "DROP"}, "FORWARD", TrafficSpec{Packets: 100, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWorkload(rs, "filter", "FORWARD", "", "", FramesOf(ps))
		if err != nil {
			t.Fatal(err)
		}
		cs, err := w.MeasureCompile(3, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if cs.Runs != 3 || cs.Time <= 0 || cs.Bytes != w.Program.CompiledBytes() {
			t.Errorf("%d rules: %+v, want 3 runs, a time and the Workload's %d bytes", n, cs, w.Program.CompiledBytes())
		}
		if cs.Bytes <= prev.Bytes {
			t.Errorf("%d rules: %d bytes, not more than %d at fewer rules", n, cs.Bytes, prev.Bytes)
		}
		prev = cs
	}
	// A spent budget stops after the first compile.
	rs := loadRules(t, userRules)
	w, err := NewWorkload(rs, "filter", "FORWARD", "", "eth1", testFrames(t))
	if err != nil {
		t.Fatal(err)
	}
	if cs, err := w.MeasureCompile(5, time.Nanosecond); err != nil || cs.Runs != 1 {
		t.Errorf("1 ns budget: %+v, %v, want 1 run", cs, err)
	}
}
