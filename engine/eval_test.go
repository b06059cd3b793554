package engine

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

func mustLoad(t testing.TB, rules string) (*Ruleset, *Program) {
	t.Helper()
	rs, err := Parse("test.rules", strings.NewReader(rules))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	return rs, p
}

func ipv4View(src, dst string, proto uint8, length int) *packet.View {
	v := &packet.View{Class: packet.ClassOK, Family: 4, Proto: proto, Len: length, TTL: 64, VLAN: -1}
	v.Src = netip.MustParseAddr(src)
	v.Dst = netip.MustParseAddr(dst)
	return v
}

func counters(t *testing.T, rs *Ruleset) string {
	t.Helper()
	var b strings.Builder
	rs.Save(&b, SaveOptions{Counters: true})
	return b.String()
}

func TestTraversal(t *testing.T) {
	// Jumps push a return point, gotos do not, RETURN pops, the end of a
	// user chain returns, and an empty stack falls to the built-in policy.
	rs, p := mustLoad(t, `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
:G - [0:0]
-A FORWARD -s 10.0.0.1/32 -j A
-A FORWARD -s 10.0.0.2/32 -g G
-A FORWARD -s 10.0.0.3/32 -j ACCEPT
-A FORWARD -p udp
-A A -d 1.1.1.1/32 -j RETURN
-A A -j B
-A A -j ACCEPT
-A B -d 2.2.2.2/32 -j DROP
-A G -d 3.3.3.3/32 -j ACCEPT
-A G -j RETURN
COMMIT
`)
	tp := p.Table("filter")
	tests := []struct {
		src, dst string
		proto    uint8
		verdict  matchers.Verdict
		chain    string
		rule     int
	}{
		{"10.0.0.1", "1.1.1.1", 6, matchers.Drop, "FORWARD", 0},  // A RETURNs, falls through FORWARD to policy
		{"10.0.0.1", "2.2.2.2", 6, matchers.Drop, "B", 1},        // A -> B drops
		{"10.0.0.1", "9.9.9.9", 6, matchers.Accept, "A", 3},      // B returns into A, A accepts
		{"10.0.0.2", "3.3.3.3", 17, matchers.Accept, "G", 1},     // goto G accepts
		{"10.0.0.2", "4.4.4.4", 17, matchers.Drop, "FORWARD", 0}, // RETURN from goto'd chain: policy, not the next FORWARD rule
		{"10.0.0.3", "4.4.4.4", 17, matchers.Accept, "FORWARD", 3},
		{"10.0.0.9", "4.4.4.4", 17, matchers.Drop, "FORWARD", 0},
	}
	var c matchers.Context
	for _, tt := range tests {
		c.Reset()
		c.Pkt, c.Hook = ipv4View(tt.src, tt.dst, tt.proto, 100), matchers.HookForward
		res := tp.Eval(&c, nil)
		if res.Verdict != tt.verdict || res.Chain != tt.chain || res.Rule != tt.rule {
			t.Errorf("%s->%s: got %v %s:%d, want %v %s:%d", tt.src, tt.dst, res.Verdict, res.Chain, res.Rule, tt.verdict, tt.chain, tt.rule)
		}
	}
	// Counters: rule counters count every match (also non-terminal ones),
	// bytes are the datagram length; the policy counts what falls through.
	got := counters(t, rs)
	for _, line := range []string{
		":FORWARD DROP [3:300]",
		"[3:300] -A FORWARD -s 10.0.0.1/32 -j A",
		"[2:200] -A FORWARD -s 10.0.0.2/32 -g G",
		"[1:100] -A FORWARD -s 10.0.0.3/32 -j ACCEPT",
		"[1:100] -A FORWARD -p udp", // the goto'd RETURN does not come back here
		"[1:100] -A A -d 1.1.1.1/32 -j RETURN",
		"[2:200] -A A -j B",
		"[1:100] -A A -j ACCEPT",
		"[1:100] -A B -d 2.2.2.2/32 -j DROP",
		"[1:100] -A G -d 3.3.3.3/32 -j ACCEPT",
		"[1:100] -A G -j RETURN",
	} {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("missing %q in\n%s", line, got)
		}
	}
}

func TestInterfacesAndFragments(t *testing.T) {
	_, p := mustLoad(t, `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -i eth+ -o wlan0 -j DROP
-A FORWARD ! -i eth0 -f -j DROP
-A FORWARD -i eth0 ! -f -p 47 -j DROP
COMMIT
`)
	tp := p.Table("filter")
	tests := []struct {
		in, out string
		frag    uint16
		proto   uint8
		want    int // deciding rule, 0 = policy
	}{
		{"eth1", "wlan0", 0, 6, 1},
		{"eth1", "wlan01", 0, 6, 0},
		{"et", "wlan0", 0, 6, 0},
		{"eth", "wlan0", 0, 6, 1},
		{"ppp0", "x", 5, 6, 2},
		{"eth0", "x", 5, 6, 0},
		{"eth0", "x", 0, 47, 3},
		{"eth0", "x", 1, 47, 0},
		{"eth0", "x", 0, 6, 0},
	}
	var c matchers.Context
	for _, tt := range tests {
		c.Reset()
		v := ipv4View("1.1.1.1", "2.2.2.2", tt.proto, 60)
		v.IPv4.FragWord = tt.frag
		c.Pkt, c.Hook, c.In, c.Out = v, matchers.HookForward, tt.in, tt.out
		if res := tp.Eval(&c, nil); res.Rule != tt.want {
			t.Errorf("%+v: decided by rule %d (%s), want %d", tt, res.Rule, res.Chain, tt.want)
		}
	}
}

func TestTraceSteps(t *testing.T) {
	_, p := mustLoad(t, `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:U - [0:0]
-A INPUT -s 9.9.9.9/32 -j ACCEPT
-A INPUT -j U
-A U -p udp -j ACCEPT
COMMIT
`)
	var steps []string
	tr := func(s Step) {
		kind := [...]string{"rule", "return", "policy"}[s.Kind]
		steps = append(steps, kind+":"+s.Chain+":"+itoa(s.Num)+":"+s.Failed)
	}
	var c matchers.Context
	c.Pkt, c.Hook = ipv4View("1.1.1.1", "2.2.2.2", 6, 60), matchers.HookInput
	res := p.Table("filter").Eval(&c, tr)
	want := "rule:INPUT:1:-s rule:INPUT:2: rule:U:1:-p return:U:2: policy:INPUT:3:"
	if got := strings.Join(steps, " "); got != want || res.Verdict != matchers.Drop {
		t.Errorf("trace %q verdict %v, want %q DROP", got, res.Verdict, want)
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + string(rune('0'+n))) }

func BenchmarkEval100Rules(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for i := 0; i < 100; i++ {
		sb.WriteString("-A FORWARD -s 10.0." + string(rune('0'+i%10)) + ".0/24 -d 192.168.1.1/32 -p udp -j DROP\n")
	}
	sb.WriteString("COMMIT\n")
	_, p := mustLoad(b, sb.String())
	tp := p.Table("filter")
	var c matchers.Context
	v := ipv4View("10.1.1.1", "192.168.1.1", 6, 60)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Reset()
		c.Pkt, c.Hook = v, matchers.HookForward
		tp.Eval(&c, nil)
	}
}
