package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

func mustExpect(t testing.TB, text string) *Expectations {
	t.Helper()
	ex, err := ParseExpectations("exp", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func TestParseExpectations(t *testing.T) {
	ex := mustExpect(t, `# a comment line

frame 3 DROP
	frame   4   ACCEPT mark 0x10/0xf0 ctmark 5 rule FORWARD:2   # trailing comment
frame 2-4,9 QUEUE
frame 7 QUEUE 3 rule FORWARD:policy
frame 8 REJECT tcp-reset
frame 8 REJECT
frame 10 SKIPPED ttl-expired
flow tcp 10.0.0.1:1234 -> 10.0.0.2:80 ACCEPT
flow udp 10.0.0.0/24:* <-> 10.0.1.1:53 DROP
flow icmp 10.0.0.1 -> 10.0.0.2 DROP
flow all 10.0.0.1 -> 10.0.0.2 DROP
rule filter FORWARD 2 packets 3
rule filter FORWARD 2 bytes 180 packets 3
policy filter FORWARD packets 1
`)
	if len(ex.Items) != 14 {
		t.Fatalf("%d expectations, want 14", len(ex.Items))
	}
	e := ex.Items[1]
	if e.Kind != ExpectFrame || e.Pos != (Pos{File: "exp", Line: 4, Col: 2}) || e.Text != "frame 4 ACCEPT mark 0x10/0xf0 ctmark 5 rule FORWARD:2" {
		t.Errorf("item 2: %+v", e)
	}
	o := e.want
	if o.verdict != wantAccept || !o.hasMark || o.mark != 0x10 || o.markMask != 0xf0 || !o.hasCtMark || o.ctmark != 5 ||
		o.ctmarkMask != 0xffffffff || o.ruleChain != "FORWARD" || o.ruleNum != 2 {
		t.Errorf("item 2 outcome %+v", o)
	}
	if e := ex.Items[2]; len(e.frames) != 2 || e.frames[0] != (frameRange{2, 4}) || e.frames[1] != (frameRange{9, 9}) || e.want.queue != -1 {
		t.Errorf("item 3: %+v", e)
	}
	if e := ex.Items[3]; e.want.queue != 3 || !e.want.hasRule || e.want.ruleNum != 0 {
		t.Errorf("item 4: %+v", e.want)
	}
	if e := ex.Items[4]; e.want.verdict != wantReject || e.want.reject != int(matchers.RejectTCPReset) {
		t.Errorf("item 5: %+v", e.want)
	}
	if e := ex.Items[5]; e.want.reject != -1 {
		t.Errorf("item 6: %+v", e.want)
	}
	if e := ex.Items[6]; e.want.verdict != wantSkipped || e.want.skip != "ttl-expired" {
		t.Errorf("item 7: %+v", e.want)
	}
	if f := ex.Items[7].flow; f.proto != 6 || f.both || f.a.String() != "10.0.0.1:1234" || f.b.String() != "10.0.0.2:80" {
		t.Errorf("item 8 flow %+v", f)
	}
	if f := ex.Items[8].flow; f.proto != 17 || !f.both || f.a.String() != "10.0.0.0/24" || f.a.port != -1 || f.b.port != 53 {
		t.Errorf("item 9 flow %+v", f)
	}
	if f := ex.Items[10].flow; f.proto != 0 {
		t.Errorf("item 11 flow %+v", f)
	}
	if e := ex.Items[12]; e.Kind != ExpectRule || e.table != "filter" || e.chain != "FORWARD" || e.num != 2 || e.packets != 3 || e.bytes != 180 {
		t.Errorf("item 13: %+v", e)
	}
	if e := ex.Items[13]; e.Kind != ExpectPolicy || e.packets != 1 || e.bytes != -1 {
		t.Errorf("item 14: %+v", e)
	}
	if len(ex.frames[3]) != 1 || len(ex.ranges) != 1 || len(ex.flows) != 4 {
		t.Errorf("index: frames %v ranges %d flows %d", ex.frames, len(ex.ranges), len(ex.flows))
	}
}

func TestParseExpectationsErrors(t *testing.T) {
	tests := []struct {
		line string
		col  int
		msg  string
	}{
		{"fram 1 DROP", 1, "unknown expectation"},
		{"frame", 7, "frame number expected"},
		{"frame 0 DROP", 7, "frames count from 1"},
		{"frame 5-3 DROP", 7, "range"},
		{"frame 1", 9, "verdict expected"},
		{"frame 1 drop", 9, "upper case"},
		{"frame 1 LOG", 9, "verdict expected"},
		{"frame 1 QUEUE x", 15, "queue number"},
		{"frame 1 REJECT bogus", 16, "unknown REJECT type"},
		{"frame 1 SKIPPED late", 17, "skip reason"},
		{"frame 1 ACCEPT mark", 21, `value expected after "mark"`},
		{"frame 1 ACCEPT mark x1", 21, "mark value"},
		{"frame 1 ACCEPT mark 1 mark 2", 23, "mark given twice"},
		{"frame 1 ACCEPT rule FORWARD", 21, "CHAIN:N"},
		{"frame 1 ACCEPT rule FORWARD:0", 21, "CHAIN:N"},
		{"frame 1 ACCEPT extra", 16, "unexpected word"},
		{"frame 1 SKIPPED mark 1", 17, "no mark"},
		{"flow tcp", 10, "source HOST[:PORT] expected"},
		{"flow foo 1.2.3.4 -> 1.2.3.5 DROP", 6, "unknown protocol"},
		{"flow tcp 1.2.3 -> 1.2.3.5 DROP", 10, "IPv4 address"},
		{"flow tcp ::1 -> 1.2.3.5 DROP", 10, "IPv4 address"},
		{"flow tcp 1.2.3.4:99999 -> 1.2.3.5 DROP", 10, "port (0-65535"},
		{"flow icmp 1.2.3.4:1 -> 1.2.3.5 DROP", 11, "only allowed for tcp and udp"},
		{"flow tcp 1.2.3.4 => 1.2.3.5 DROP", 18, `"->"`},
		{"flow tcp 1.2.3.4 -> 1.2.3.5", 29, "verdict expected"},
		{"rule filter FORWARD", 21, "rule number expected"},
		{"rule filter FORWARD x packets 1", 21, "rule number"},
		{"rule filter FORWARD 1", 23, `"packets N" or "bytes N"`},
		{"rule filter FORWARD 1 packets", 31, `a count after "packets"`},
		{"rule filter FORWARD 1 packets -1", 31, "a count"},
		{"rule filter FORWARD 1 frames 1", 23, `"packets" or "bytes"`},
		{"policy filter FORWARD packets 1 packets 2", 33, "given twice"},
	}
	for _, tt := range tests {
		_, err := ParseExpectations("f", strings.NewReader("# first line\n"+tt.line+"\n"))
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("%q: error %v, want a positioned *Error", tt.line, err)
			continue
		}
		if pe.Pos.File != "f" || pe.Pos.Line != 2 || pe.Pos.Col != tt.col || !strings.Contains(pe.Msg, tt.msg) {
			t.Errorf("%q: %v, want f:2:%d: ...%s...", tt.line, err, tt.col, tt.msg)
		}
	}

	// Every bad line is reported, in order.
	_, err := ParseExpectations("f", strings.NewReader("frame x DROP\nframe 1 ACCEPT\nflow\nframe 2 DROP junk\n"))
	msg := err.Error()
	if !strings.HasPrefix(msg, "f:1:7: ") || !strings.Contains(msg, "\nf:3:6: ") || !strings.Contains(msg, "\nf:4:14: ") {
		t.Errorf("joined errors:\n%s", msg)
	}
}

func TestValidateExpectations(t *testing.T) {
	f := newReportFixture(t, reportRules)
	ex := mustExpect(t, `frame 1 ACCEPT rule FORWARD:5
frame 1 ACCEPT rule FORWARD:policy
frame 1 ACCEPT rule FORWARD:6
frame 1 ACCEPT rule LOGIT:policy
frame 1 ACCEPT rule NOPE:1
rule filter LOGIT 1 packets 0
rule filter LOGIT 2 packets 0
policy filter LOGIT packets 0
rule mangle FORWARD 1 packets 0
rule filter INPUT 1 packets 0
`)
	err := ex.Validate(f.rs, "filter")
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		"exp:3:21: chain FORWARD of table filter has 5 rules, not 6",
		"exp:4:21: LOGIT is a user-defined chain, which has no policy",
		"exp:5:21: table filter has no chain \"NOPE\"",
		"exp:7:19: chain LOGIT of table filter has 1 rules, not 2",
		"exp:8:15: LOGIT is a user-defined chain",
		"exp:9:1: the rules define no mangle table",
		"exp:10:19: chain INPUT of table filter has 0 rules, not 1",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("errors:\n%s", err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d: %q, want %q...", i+1, lines[i], w)
		}
	}
}

func TestExpectationsCheck(t *testing.T) {
	f := newReportFixture(t, reportRules)
	ex := mustExpect(t, `frame 1 ACCEPT mark 0x2a rule FORWARD:2
frame 1 ACCEPT mark 0x2/0x2
frame 1 ACCEPT mark 0x2a/0x0f
frame 2 REJECT tcp-reset
frame 2 REJECT icmp-port-unreachable
frame 2 DROP rule FORWARD:3
frame 3 QUEUE 7
frame 3 QUEUE 8
frame 3 ACCEPT
frame 4 DROP rule FORWARD:policy
frame 4 REJECT
frame 5 SKIPPED non-ip
frame 5 SKIPPED truncated
frame 1-6 ACCEPT
frame 8 DROP
flow tcp 10.0.0.1 -> 10.0.1.1:22 ACCEPT
flow tcp 10.0.1.1:22 -> 10.0.0.1 ACCEPT
flow tcp 10.0.1.1:22 <-> 10.0.0.1 ACCEPT
flow tcp 10.0.0.0/8:* <-> 10.0.1.1 ACCEPT
flow udp 10.0.0.1 -> 10.0.1.1 ACCEPT
flow all 10.9.0.1 -> 10.0.1.1 DROP
flow tcp 192.0.2.1 -> 192.0.2.2 DROP
rule filter FORWARD 2 packets 2 bytes 100
rule filter FORWARD 2 bytes 60
rule filter LOGIT 1 packets 1
policy filter FORWARD packets 2 bytes 96
policy filter FORWARD packets 1
policy filter INPUT packets 0
frame 4-5,7 SKIPPED
`)
	if err := ex.Validate(f.rs, "filter"); err != nil {
		t.Fatal(err)
	}
	// The packets, in order: TCP to 22 (marked, accepted), TCP to 23
	// (rejected), UDP to 5000 (queued), ICMP from 10.9/16 (logged, policy
	// drop), a non-IP frame, the reply of the first connection (policy
	// drop), and a UDP packet skipped with its addresses decoded.
	views := []*packet.View{
		rpView(packet.ProtoTCP, "10.0.0.1", 40000, "10.0.1.1", 22, 60),
		rpView(packet.ProtoTCP, "10.0.0.1", 40001, "10.0.1.1", 23, 40),
		rpView(packet.ProtoUDP, "10.0.0.1", 1, "10.0.1.1", 5000, 28),
		rpView(packet.ProtoICMP, "10.9.0.1", 0, "10.0.1.1", 0, 56),
		{Class: packet.ClassNonIP},
		rpView(packet.ProtoTCP, "10.0.1.1", 22, "10.0.0.1", 40000, 40),
		rpView(packet.ProtoUDP, "10.0.0.1", 2, "10.0.1.1", 53, 28),
	}
	skip := map[int]string{5: "non-ip", 7: "ttl-expired"}
	for i, v := range views {
		if reason, ok := skip[i+1]; ok {
			var c matchers.Context
			ex.Observe(&Verdict{Frame: i + 1, View: v, Skipped: true, SkipReason: reason, Ctx: &c}, f.rep)
			continue
		}
		ex.Observe(f.eval(i+1, v, nil), f.rep)
	}
	const (
		acc22  = " (-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT)"
		rej23  = " (-A FORWARD -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset)"
		q5000  = " (-A FORWARD -p udp -m udp --dport 5000 -j NFQUEUE --queue-num 7 --queue-bypass)"
		policy = " (-P FORWARD DROP)"
	)
	want := [][]string{
		nil, // 1
		nil,
		{"frame 1: ACCEPT by FORWARD:2" + acc22 + ", mark 0x2a"}, // as -m mark: (mark & 0x0f) == 0x2a never holds
		nil,
		{"frame 2: DROP (REJECT tcp-reset) by FORWARD:3" + rej23}, // 5
		nil,
		nil,
		{"frame 3: QUEUE 7 by FORWARD:4" + q5000},
		{"frame 3: QUEUE 7 by FORWARD:4" + q5000},
		nil, // 10
		{"frame 4: DROP by FORWARD:policy" + policy},
		nil,
		{"frame 5: skipped (non-ip)"},
		{ // 14: every frame but 1
			"frame 2: DROP (REJECT tcp-reset) by FORWARD:3" + rej23,
			"frame 3: QUEUE 7 by FORWARD:4" + q5000,
			"frame 4: DROP by FORWARD:policy" + policy,
			"frame 5: skipped (non-ip)",
			"frame 6: DROP by FORWARD:policy" + policy,
		},
		{"frame 8 not in the capture (7 frames read)"}, // 15
		nil,
		{"1 of 1 packets of the flow differ", "frame 6: DROP by FORWARD:policy" + policy},
		{"1 of 2 packets of the flow differ", "frame 6: DROP by FORWARD:policy" + policy},
		{"2 of 3 packets of the flow differ", "frame 2: DROP (REJECT tcp-reset) by FORWARD:3" + rej23, "frame 6: DROP by FORWARD:policy" + policy},
		{"1 of 1 packets of the flow differ", "frame 3: QUEUE 7 by FORWARD:4" + q5000}, // 20: frame 7 is skipped
		nil,
		{"no evaluated packet belongs to the flow"},
		{"packets 1 bytes 60"},
		nil,
		nil, // 25
		nil,
		{"packets 2 bytes 96"},
		nil,
		{"frame 4: DROP by FORWARD:policy" + policy}, // 29: frame 6 is not in 4-5,7
	}
	results := ex.Results(f.rs)
	if len(results) != len(want) {
		t.Fatalf("%d results, want %d", len(results), len(want))
	}
	for i, r := range results {
		if r.Expectation != ex.Items[i] {
			t.Errorf("result %d is for %q", i+1, r.Expectation.Text)
		}
		if r.Passed != (want[i] == nil) || strings.Join(r.Got, "\n") != strings.Join(want[i], "\n") {
			t.Errorf("line %d %q: passed %v, got:\n\t%s\nwant:\n\t%s", i+1, r.Expectation.Text, r.Passed,
				strings.Join(r.Got, "\n\t"), strings.Join(want[i], "\n\t"))
		}
	}
	if s := results[2].Summary(); s != "expected frame 1 ACCEPT mark 0x2a/0x0f; got frame 1: ACCEPT by FORWARD:2"+acc22+", mark 0x2a" {
		t.Errorf("summary %q", s)
	}
	if s := results[0].Summary(); s != "ok" {
		t.Errorf("summary of a pass %q", s)
	}
}

// TestExpectationsManyMismatches bounds the mismatches described.
func TestExpectationsManyMismatches(t *testing.T) {
	f := newReportFixture(t, reportRules)
	ex := mustExpect(t, "flow udp 10.0.0.1 -> 10.0.1.1 ACCEPT\nframe 1-100 ACCEPT\n")
	for i := 1; i <= 20; i++ {
		ex.Observe(f.eval(i, rpView(packet.ProtoUDP, "10.0.0.1", 1, "10.0.1.1", 5000, 28), nil), f.rep)
	}
	res := ex.Results(f.rs)
	if g := res[0].Got; len(g) != maxGot+2 || g[0] != "20 of 20 packets of the flow differ" || g[len(g)-1] != "... and 15 more" {
		t.Errorf("flow: %q", g)
	}
	if g := res[1].Got; len(g) != maxGot+2 || g[maxGot] != "... and 15 more" || g[maxGot+1] != "frame 21-100 not in the capture (20 frames read)" {
		t.Errorf("frames: %q", g)
	}
}

// BenchmarkExpectationsObserve checks that observing packets that meet
// their expectations allocates nothing: it runs once per packet.
func BenchmarkExpectationsObserve(b *testing.B) {
	f := newReportFixture(b, reportRules)
	ex := mustExpect(b, `frame 1 ACCEPT mark 0x2a
frame 1-1000000 ACCEPT rule FORWARD:2
flow tcp 10.0.0.1 <-> 10.0.1.1:22 ACCEPT
flow udp 10.0.0.0/8 -> 10.0.1.1:53 DROP
`)
	v := f.eval(1, rpView(packet.ProtoTCP, "10.0.0.1", 40000, "10.0.1.1", 22, 60), nil)
	b.ReportAllocs()
	for b.Loop() {
		ex.Observe(v, f.rep)
	}
	// Frame 1 observed over and over: all hold, none describes a mismatch.
	for _, e := range ex.Items {
		if e.bad != 0 {
			b.Fatalf("%q: %d mismatches: %q", e.Text, e.bad, e.got)
		}
	}
}
