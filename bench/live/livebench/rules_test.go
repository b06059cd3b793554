package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qbench "github.com/qtables/qtables/bench"
	"github.com/qtables/qtables/engine"
)

func TestForwardable(t *testing.T) {
	pub := netip.MustParseAddr("186.11.101.36")
	for _, c := range []struct {
		src, dst string
		want     bool
	}{
		{"186.11.101.36", "20.69.109.43", true},
		{"240.1.2.3", "20.69.109.43", true}, // class E is routed as unicast
		{"0.1.2.3", "20.69.109.43", false},
		{"127.0.0.1", "20.69.109.43", false},
		{"186.11.101.36", "224.0.0.5", false},
		{"186.11.101.36", "239.255.255.250", false},
		{"186.11.101.36", "255.255.255.255", false},
		{"10.0.1.7", "20.69.109.43", false},  // the sender's link
		{"186.11.101.36", "10.0.2.1", false}, // the router's own address
		{"10.1.0.1", "10.200.3.4", true},     // 10/8 outside the namespaces' links
	} {
		if got := forwardable(netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst)); got != c.want {
			t.Errorf("forwardable(%s, %s) = %v, want %v", c.src, c.dst, got, c.want)
		}
	}
	if forwardable(pub, netip.MustParseAddr("2001:db8::1")) {
		t.Error("IPv6 destination forwardable")
	}
}

func TestSpreadTraffic(t *testing.T) {
	pfx := netip.MustParsePrefix
	fs := []qbench.Filter{
		{Src: pfx("1.0.0.0/8"), Dst: pfx("2.0.0.0/8"), SPort: qbench.AnyPort, DPort: qbench.PortRange{Lo: 80, Hi: 80}, Proto: 6, Accept: true},
		{Src: pfx("1.0.0.0/8"), Dst: pfx("0.0.0.0/0"), SPort: qbench.AnyPort, DPort: qbench.AnyPort, Proto: 17, Accept: false},
		{Src: pfx("0.0.0.0/0"), Dst: pfx("0.0.0.0/0"), SPort: qbench.AnyPort, DPort: qbench.AnyPort, Accept: true},
		{Src: pfx("9.0.0.0/8"), Dst: pfx("9.0.0.0/8"), SPort: qbench.AnyPort, DPort: qbench.AnyPort, Accept: true},
	}
	tup := func(src, dst string, proto uint8, dport uint16) qbench.Tuple {
		return qbench.Tuple{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: proto, SPort: 40000, DPort: dport, HasPorts: proto != 1}
	}
	ps := []qbench.Packet{
		{Tuple: tup("1.1.1.1", "2.2.2.2", 6, 80)},  // rule 1
		{Tuple: tup("1.1.1.1", "2.2.2.2", 6, 81)},  // rule 3
		{Tuple: tup("1.1.1.1", "3.3.3.3", 17, 53)}, // rule 2 drops: left out
		{Tuple: tup("5.1.1.1", "224.0.0.1", 1, 0)}, // multicast: left out
		{Tuple: tup("5.1.1.1", "6.6.6.6", 1, 0)},   // rule 3
		{Tuple: tup("9.1.1.1", "10.0.2.2", 6, 22)}, // the sink's address: left out
	}
	for i := range ps {
		ps[i].Frame = qbench.EncodeFrame(&ps[i].Tuple, 0, 0)
	}
	frames, s := spreadTraffic(fs, ps)
	want := spread{Generated: 6, Unroutable: 2, NoAccept: 1, Packets: 3, Rules: 2, LateHalf: 2, MeanPos: (1 + 3 + 3) / 3.0}
	if s != want {
		t.Errorf("spread = %+v, want %+v", s, want)
	}
	if len(frames) != 3 || &frames[0][0] != &ps[0].Frame[0] || &frames[1][0] != &ps[1].Frame[0] || &frames[2][0] != &ps[4].Frame[0] {
		t.Errorf("frames are not packets 0, 1 and 4 in order")
	}
}

// TestRuleSet checks the emitted sets: the restore file loads, FORWARD
// has the policy DROP and every rule accepts, and the filters returned
// are the chain in order.
func TestRuleSet(t *testing.T) {
	cb := filepath.Join(t.TempDir(), "acl")
	// ClassBench lines: a TCP filter, and an any-protocol filter with a
	// port range, which needs a TCP and a UDP rule.
	if err := os.WriteFile(cb, []byte(
		"@186.11.101.36/32\t20.69.109.43/32\t0 : 65535\t1521 : 1521\t0x06/0xFF\t0x1000/0x1000\t\n"+
			"@10.1.0.0/16\t0.0.0.0/0\t0 : 65535\t53 : 53\t0x00/0x00\t0x0000/0x0200\t\n"+
			"@10.2.0.0/16\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x11/0xFF\t0x0000/0x0200\t\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src       string
		n         int
		wantRules int
	}{
		{"gen:acl", 300, 300},
		{"gen:ipc", 50, 50},
		{cb, 10, 4}, // 3 filters, one split in two
		{cb, 1, 1},
	} {
		text, fs, desc, err := ruleSet(c.src, c.n)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		if len(fs) != c.wantRules || desc == "" {
			t.Errorf("%s %d: %d filters (%q), want %d", c.src, c.n, len(fs), desc, c.wantRules)
		}
		rs, err := engine.Parse(c.src, strings.NewReader(text))
		if err != nil {
			t.Fatalf("%s: the emitted set does not load: %v", c.src, err)
		}
		cc, err := parseForwardCounts([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		if cc.Rules != 0 { // no counters in a restore file: no "[p:b]" lines
			t.Errorf("%s: counted %d rules in a file without counters", c.src, cc.Rules)
		}
		var rules, accepts int
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "-A ") {
				rules++
				if !strings.HasPrefix(l, "-A FORWARD ") {
					t.Errorf("%s: rule outside FORWARD: %s", c.src, l)
				}
				if strings.HasSuffix(l, " -j ACCEPT") {
					accepts++
				}
			}
		}
		if rules != len(fs) || accepts != rules || !strings.Contains(text, "\n:FORWARD DROP [0:0]\n") {
			t.Errorf("%s: %d rules, %d accepting, %d filters; policy line present: %v", c.src, rules, accepts, len(fs), strings.Contains(text, ":FORWARD DROP"))
		}
		if got := len(rs.Table("filter").Chain("FORWARD").Rules); got != len(fs) {
			t.Errorf("%s: loaded FORWARD has %d rules, want %d", c.src, got, len(fs))
		}
		for i, f := range fs {
			if f.Ref.Num != i+1 || !f.Accept {
				t.Fatalf("%s: filter %d is rule %v, accept %v", c.src, i, f.Ref, f.Accept)
			}
		}
	}
	if _, _, _, err := ruleSet(filepath.Join(t.TempDir(), "missing"), 10); err == nil {
		t.Error("a missing ClassBench file loaded")
	}
	if _, _, _, err := ruleSet("gen:acl", 0); err == nil {
		t.Error("0 rules accepted")
	}
}

func TestParseForwardCounts(t *testing.T) {
	// iptables-legacy-save -c (v1.8.9), with a second table and a user
	// chain around the FORWARD rules.
	save := `# Generated by iptables-save v1.8.9 on Thu Nov 26 14:25:05 2026
*raw
:PREROUTING ACCEPT [5:300]
[7:420] -A PREROUTING -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [3:156]
:OUTPUT ACCEPT [0:0]
:NET-10 - [0:0]
[10:520] -A FORWARD -s 1.2.3.4/32 -p tcp -m tcp --dport 80 -j ACCEPT
[0:0] -A FORWARD -p udp -j DROP
[25:1300] -A FORWARD -j ACCEPT
[4:200] -A NET-10 -j ACCEPT
COMMIT
# Completed on Thu Nov 26 14:25:05 2026
`
	c, err := parseForwardCounts([]byte(save))
	if err != nil {
		t.Fatal(err)
	}
	if want := (chainCounts{Accepted: 35, Policy: 3, Rules: 3}); c != want {
		t.Errorf("counts = %+v, want %+v", c, want)
	}
	if _, err := parseForwardCounts([]byte("*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")); err == nil {
		t.Error("no FORWARD chain, no error")
	}
	if _, err := parseForwardCounts([]byte("*filter\n:FORWARD DROP [x:0]\nCOMMIT\n")); err == nil {
		t.Error("bad policy counter, no error")
	}
}

func TestParseLinkStats(t *testing.T) {
	// ip -s -j link show dev a0 (iproute2 6.1), counters filled in.
	js := `[{"ifindex":3,"link":"a1","ifname":"a0","flags":["BROADCAST","MULTICAST","M-DOWN"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"76:52:29:0d:39:48","broadcast":"ff:ff:ff:ff:ff:ff","stats64":{"rx":{"bytes":900,"packets":12,"errors":0,"dropped":1,"over_errors":0,"multicast":0},"tx":{"bytes":4000,"packets":77,"errors":0,"dropped":5,"carrier_errors":0,"collisions":0}}}]`
	s, err := parseLinkStats([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if want := (linkStats{RxPackets: 12, TxPackets: 77, TxDropped: 5}); s != want {
		t.Errorf("stats = %+v, want %+v", s, want)
	}
	if _, err := parseLinkStats([]byte("[]")); err == nil {
		t.Error("no link, no error")
	}
}

func TestFlowCountsCheck(t *testing.T) {
	ok := flowCounts{Sent: 1000, RouterIn: 1000, Forwarded: 900, FwdDrops: 10, AtSink: 895, HasRules: true, Accepted: 910}
	for _, c := range []struct {
		name string
		c    flowCounts
		bad  string // a part of the complaint; "" for none
	}{
		{"agree", ok, ""},
		{"policy", func() flowCounts { c := ok; c.Policy = 2; return c }(), "2 dropped by the policy"},
		{"accepted", func() flowCounts { c := ok; c.Accepted = 905; return c }(), "rules accepted 905, router sent on 910"},
		{"ct drops", func() flowCounts { c := ok; c.Accepted, c.CtDrops = 915, 5; return c }(), "rules accepted 915, router sent on 910 (qtables' flow table dropped 5: ct_drops)"},
		{"sink short", func() flowCounts { c := ok; c.AtSink = 800; return c }(), "router sent 900, sink got 800"},
		{"sink over", func() flowCounts { c := ok; c.AtSink = 901; return c }(), "sink got 901"},
		{"no rules", flowCounts{Forwarded: 50, AtSink: 50, Accepted: 7}, ""},
	} {
		got := c.c.check()
		if c.bad == "" && got != "" || c.bad != "" && !strings.Contains(got, c.bad) {
			t.Errorf("%s: check() = %q, want %q", c.name, got, c.bad)
		}
	}
}

func TestRulesReport(t *testing.T) {
	cs := ruleConsumers()
	res := map[string][]ruleResult{}
	good := flowCounts{Forwarded: 10, AtSink: 10, HasRules: true, Accepted: 10}
	add := func(name string, queues, senders int, pps ...float64) {
		for _, p := range pps {
			k := ruleKey(ruleConsumer{name: name, queues: queues, senders: senders})
			res[k] = append(res[k], ruleResult{pps: p, consumerCPU: 3 * time.Microsecond, senderCPU: time.Microsecond, counts: good})
		}
	}
	// iptables-legacy's CPU is all the senders': 20, 10 and 30 µs.
	add(legacyName, 0, 1, 20000, 10000, 30000)
	for i, us := range []time.Duration{20, 10, 30} {
		r := &res[ruleKey(ruleConsumer{name: legacyName})][i]
		r.consumerCPU, r.senderCPU = 0, us*time.Microsecond
	}
	add("qtables", 1, 1, 80000, 50000, 60000) // ratios 4, 5, 2
	add(legacyName, 0, 2, 40000, 40000, 40000)
	for i := range 3 {
		r := &res[ruleKey(ruleConsumer{name: legacyName, senders: 2})][i]
		r.consumerCPU, r.senderCPU = 0, 40*time.Microsecond
	}
	add("qtables", 2, 2, 100000, 120000, 60000) // ratios 2.5, 3, 1.5
	bad := ruleResult{pps: 1, senderCPU: time.Microsecond, counts: flowCounts{Forwarded: 10, AtSink: 5}}
	res[ruleKey(ruleConsumer{name: "kernel iptables-nft"})] = []ruleResult{bad}
	w := &ruleWorkload{desc: "test set", rules: 100, spread: spread{Generated: 10, Packets: 8, Rules: 5, LateHalf: 4, MeanPos: 50, Unroutable: 2}}
	out := rulesReport(w, cs, res, options{duration: time.Second, rounds: 3}, "load average 1.00")
	for _, want := range []string{
		"| kernel iptables-legacy | - | 1 | 20000 (10000-30000) | - | - | 20µs | - | agree in 3/3 |",
		// CPU: legacy's 20, 10 and 30 µs over qtables' 4 µs each round.
		"| qtables | 1 | 1 | 60000 (50000-80000) | 4.00x (2.00-5.00x) | 3µs | 1µs | 5.00x (2.50-7.50x) | agree in 3/3 |",
		"| kernel iptables-legacy | - | 2 | 40000 (40000-40000) | - |",
		"| qtables | 2 | 2 | 100000 (60000-120000) | 2.50x (1.50-3.00x) | 3µs | 1µs | 10.00x (10.00-10.00x) |",
		"| kernel iptables-nft | - | 1 | 1 (1-1) | 0.00x (0.00-0.00x) | - | 1µs | 20.00x (20.00-20.00x) | agree in 0/1 |",
		"test set: 100 rules in FORWARD", ", load average 1.00",
		"8 packets", "5 distinct rules", "position 50 of 100", "50% in the chain's second half",
		"counters that do not add up:\n- kernel iptables-nft, 0 queue(s), 1 sender(s), round 1: router sent 10, sink got 5\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// Consumers without results are left out.
	if strings.Contains(out, "kernel (no rules)") {
		t.Errorf("report shows a consumer that was not measured:\n%s", out)
	}
}
