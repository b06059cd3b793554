package engine

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// reportRules exercises every field of a verdict record: a mark, a
// reject, a log line from a user chain, a queue with bypass.
const reportRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:LOGIT - [0:0]
-A FORWARD -p tcp -m tcp --dport 22 -j MARK --set-xmark 0x2a/0xffffffff
-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset
-A FORWARD -p udp -m udp --dport 5000 -j NFQUEUE --queue-num 7 --queue-bypass
-A FORWARD -s 10.9.0.0/16 -j LOGIT
-A LOGIT -j LOG --log-prefix "x: " --log-level 3
COMMIT
`

// reportFixture is a loaded rule set with a report and an evaluator for
// hand-built packets at FORWARD.
type reportFixture struct {
	rs  *Ruleset
	tp  *TableProgram
	rep *Report
	c   matchers.Context
}

func newReportFixture(t testing.TB, rules string) *reportFixture {
	t.Helper()
	rs, err := Parse("rules.v4", strings.NewReader(rules))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := NewReport(rs, "filter")
	if err != nil {
		t.Fatal(err)
	}
	return &reportFixture{rs: rs, tp: p.Table("filter"), rep: rep}
}

// rpView is an IPv4 packet as the decoder would present it.
func rpView(proto uint8, src string, sport uint16, dst string, dport uint16, length int) *packet.View {
	v := &packet.View{Class: packet.ClassOK, Family: 4, Proto: proto, Len: length, TTL: 63, VLAN: -1,
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst),
		Timestamp: time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))}
	if proto == packet.ProtoTCP || proto == packet.ProtoUDP {
		v.SrcPort, v.DstPort, v.HasPorts, v.HasTransport = sport, dport, true, true
		if proto == packet.ProtoTCP {
			v.L4 = make([]byte, 20)
			v.L4[0], v.L4[1], v.L4[2], v.L4[3] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
			v.L4[12] = 5 << 4
			v.L4[13] = packet.TCPSyn
			v.TCPFlags = packet.TCPSyn
		} else {
			v.L4 = []byte{byte(sport >> 8), byte(sport), byte(dport >> 8), byte(dport), 0, 8, 0, 0}
		}
	}
	if proto == packet.ProtoICMP {
		v.ICMPType, v.ICMPCode, v.HasTransport = 3, 1, true
		v.L4 = []byte{3, 1, 0, 0, 0, 0, 0, 0}
	}
	return v
}

// eval runs v through FORWARD and returns the Verdict an offline run
// would hand out; tr may be nil.
func (f *reportFixture) eval(frame int, v *packet.View, tr Tracer) *Verdict {
	f.c.Reset()
	f.c.Pkt, f.c.Hook, f.c.Table, f.c.In, f.c.Out, f.c.Now = v, matchers.HookForward, "filter", "eth0", "eth1", v.Timestamp
	res := f.tp.Eval(&f.c, tr)
	return &Verdict{Frame: frame, View: v, Result: res, Ctx: &f.c}
}

func TestReportRecord(t *testing.T) {
	f := newReportFixture(t, reportRules)
	toJSON := func(rec VerdictRecord) map[string]any {
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name   string
		view   *packet.View
		want   map[string]any
		absent []string
	}{
		{
			name: "marked accept",
			view: rpView(packet.ProtoTCP, "10.0.0.1", 40000, "10.0.1.1", 22, 60),
			want: map[string]any{"frame": 1.0, "time": "2024-05-01T08:00:00.123456789Z", "src": "10.0.0.1", "dst": "10.0.1.1",
				"proto": "tcp", "sport": 40000.0, "dport": 22.0, "verdict": "ACCEPT", "mark": "0x2a", "ctmark": "0x0",
				"rule": "FORWARD:2", "rule_text": "-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT"},
			absent: []string{"events", "queue", "bypass", "hotdrop", "skipped", "trace", "icmp_type"},
		},
		{
			name: "reject is a drop with an event",
			view: rpView(packet.ProtoTCP, "10.0.0.1", 40001, "10.0.1.1", 23, 40),
			want: map[string]any{"verdict": "DROP", "rule": "FORWARD:3", "mark": "0x0",
				"rule_text": "-A FORWARD -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset"},
		},
		{
			name: "queue with bypass",
			view: rpView(packet.ProtoUDP, "10.0.0.1", 1, "10.0.1.1", 5000, 28),
			want: map[string]any{"verdict": "QUEUE 7", "queue": 7.0, "bypass": true, "rule": "FORWARD:4"},
		},
		{
			name: "log in a user chain, then policy",
			view: rpView(packet.ProtoICMP, "10.9.0.1", 0, "10.0.1.1", 0, 56),
			want: map[string]any{"verdict": "DROP", "rule": "FORWARD:policy", "rule_text": "-P FORWARD DROP",
				"proto": "icmp", "icmp_type": 3.0, "icmp_code": 1.0},
			absent: []string{"sport", "dport", "queue"},
		},
	}
	for i, tt := range tests {
		v := f.eval(i+1, tt.view, nil)
		got := toJSON(f.rep.Record(v))
		for k, w := range tt.want {
			if got[k] != w {
				t.Errorf("%s: %s = %#v, want %#v", tt.name, k, got[k], w)
			}
		}
		for _, k := range tt.absent {
			if _, ok := got[k]; ok {
				t.Errorf("%s: unexpected %s = %#v", tt.name, k, got[k])
			}
		}
	}

	v := f.eval(2, rpView(packet.ProtoTCP, "10.0.0.1", 40001, "10.0.1.1", 23, 40), nil)
	rec := f.rep.Record(v)
	if len(rec.Events) != 1 || rec.Events[0] != (EventRecord{Type: "REJECT", Rule: "FORWARD:3", With: "tcp-reset"}) {
		t.Errorf("reject events %+v", rec.Events)
	}
	v = f.eval(4, rpView(packet.ProtoICMP, "10.9.0.1", 0, "10.0.1.1", 0, 56), nil)
	rec = f.rep.Record(v)
	if len(rec.Events) != 1 || rec.Events[0].Type != "LOG" || rec.Events[0].Rule != "LOGIT:1" ||
		rec.Events[0].Level == nil || *rec.Events[0].Level != 3 || !strings.HasPrefix(rec.Events[0].Text, "x: IN=eth0 OUT=eth1 ") {
		t.Errorf("log events %+v", rec.Events)
	}
	// Level 0 (emerg) is a level, not an absent one.
	lvl := uint8(0)
	b, _ := json.Marshal(EventRecord{Type: "LOG", Rule: "X:1", Level: &lvl})
	if !bytes.Contains(b, []byte(`"level":0`)) {
		t.Errorf("level 0 encodes as %s", b)
	}
}

func TestReportRecordSkipped(t *testing.T) {
	f := newReportFixture(t, reportRules)
	var c matchers.Context
	arp := &packet.View{Class: packet.ClassNonIP, VLAN: -1, Timestamp: time.Unix(1, 5).UTC()}
	rec := f.rep.Record(&Verdict{Frame: 3, View: arp, Skipped: true, SkipReason: "non-ip", Ctx: &c})
	b, _ := json.Marshal(rec)
	if string(b) != `{"frame":3,"time":"1970-01-01T00:00:01.000000005Z","skipped":"non-ip"}` {
		t.Errorf("skipped record %s", b)
	}
	ttl := rpView(packet.ProtoUDP, "10.0.0.1", 1, "10.0.0.2", 53, 28)
	rec = f.rep.Record(&Verdict{Frame: 4, View: ttl, Skipped: true, SkipReason: "ttl-expired", Ctx: &c})
	if rec.Src != "10.0.0.1" || rec.Dport == nil || *rec.Dport != 53 || rec.Verdict != "" || rec.Rule != "" || rec.Mark != "" {
		t.Errorf("ttl-expired record %+v", rec)
	}
}

func TestTraceLines(t *testing.T) {
	f := newReportFixture(t, reportRules)
	var steps []string
	tr := func(s Step) { steps = append(steps, f.rep.TraceStep(s)) }
	v := f.eval(5, rpView(packet.ProtoUDP, "10.9.0.1", 1, "10.0.1.1", 53, 28), tr)
	// UDP to 53 from 10.9/16: rules 1-3 need TCP, rule 4 needs dport 5000,
	// rule 5 jumps to LOGIT, which logs and returns; the policy drops.
	want := []string{
		"TRACE: filter:FORWARD:rule:1 -A FORWARD -p tcp -m tcp --dport 22 -j MARK --set-xmark 0x2a/0xffffffff -> no match (-p)",
		"TRACE: filter:FORWARD:rule:2 -A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT -> no match (-p)",
		"TRACE: filter:FORWARD:rule:3 -A FORWARD -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset -> no match (-p)",
		"TRACE: filter:FORWARD:rule:4 -A FORWARD -p udp -m udp --dport 5000 -j NFQUEUE --queue-num 7 --queue-bypass -> no match (-m udp)",
		"TRACE: filter:FORWARD:rule:5 -A FORWARD -s 10.9.0.0/16 -j LOGIT -> match",
		`TRACE: filter:LOGIT:rule:1 -A LOGIT -j LOG --log-prefix "x: " --log-level 3 -> match`,
		"TRACE: filter:LOGIT:return:2",
		"TRACE: filter:FORWARD:policy:6 -P FORWARD DROP",
	}
	if strings.Join(steps, "\n") != strings.Join(want, "\n") {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(want, "\n"))
	}
	if got := f.rep.TraceVerdict(v); got != "TRACE: frame 5 verdict DROP by filter:FORWARD:policy LOG(LOGIT:1)" {
		t.Errorf("verdict line %q", got)
	}
	if got := TraceHeader(v, "eth0", "eth1"); got != "TRACE: frame 5 2024-05-01T08:00:00.123456789Z IN=eth0 OUT=eth1 SRC=10.9.0.1 DST=10.0.1.1 LEN=28 TTL=63 PROTO=UDP SPT=1 DPT=53" {
		t.Errorf("header %q", got)
	}

	// Source address part failing, hotdrop, a rule without target.
	for _, tt := range []struct {
		step Step
		want string
	}{
		{Step{Kind: StepRule, Chain: "FORWARD", Num: 5, Failed: "-s"}, "TRACE: filter:FORWARD:rule:5 -A FORWARD -s 10.9.0.0/16 -j LOGIT -> no match (-s)"},
		{Step{Kind: StepRule, Chain: "FORWARD", Num: 1, Failed: "hotdrop"}, "TRACE: filter:FORWARD:rule:1 -A FORWARD -p tcp -m tcp --dport 22 -j MARK --set-xmark 0x2a/0xffffffff -> hotdrop (malformed packet dropped)"},
		{Step{Kind: StepReturn, Chain: "LOGIT", Num: 2, Matched: true}, "TRACE: filter:LOGIT:return:2"},
	} {
		if got := f.rep.TraceStep(tt.step); got != tt.want {
			t.Errorf("TraceStep(%+v) = %q, want %q", tt.step, got, tt.want)
		}
	}

	// Mark and queue in the verdict line.
	v = f.eval(6, rpView(packet.ProtoTCP, "10.0.0.1", 40000, "10.0.1.1", 22, 60), nil)
	if got := f.rep.TraceVerdict(v); got != "TRACE: frame 6 verdict ACCEPT by filter:FORWARD:2 mark 0x2a" {
		t.Errorf("verdict line %q", got)
	}
	v.Skipped, v.SkipReason = true, "truncated"
	if got := f.rep.TraceVerdict(v); got != "TRACE: frame 6 skipped (truncated)" {
		t.Errorf("skipped line %q", got)
	}
}

func TestRuleRefAndText(t *testing.T) {
	f := newReportFixture(t, reportRules)
	if got := RuleRef(Result{Chain: "FORWARD"}); got != "FORWARD:policy" {
		t.Errorf("policy ref %q", got)
	}
	if got := RuleRef(Result{Chain: "LOGIT", Rule: 1}); got != "LOGIT:1" {
		t.Errorf("rule ref %q", got)
	}
	for _, tt := range []struct {
		chain string
		num   int
		want  string
	}{
		{"FORWARD", 0, "-P FORWARD DROP"},
		{"INPUT", 0, "-P INPUT ACCEPT"},
		{"LOGIT", 0, ""}, // user chains have no policy
		{"LOGIT", 2, ""},
		{"NOPE", 1, ""},
		{"FORWARD", 5, "-A FORWARD -s 10.9.0.0/16 -j LOGIT"},
	} {
		if got := f.rep.RuleText(tt.chain, tt.num); got != tt.want {
			t.Errorf("RuleText(%s, %d) = %q, want %q", tt.chain, tt.num, got, tt.want)
		}
	}
	if _, err := NewReport(f.rs, "mangle"); err == nil {
		t.Error("NewReport for a table the rules lack: no error")
	}
}

func TestWriteJUnit(t *testing.T) {
	pass := &Expectation{Pos: Pos{File: "e.txt", Line: 1, Col: 1}, Text: "frame 1 ACCEPT"}
	fail := &Expectation{Pos: Pos{File: "e.txt", Line: 2, Col: 1}, Text: `flow tcp 10.0.0.1 <-> 10.0.0.2 DROP`}
	results := []ExpectResult{
		{Expectation: pass, Passed: true},
		// Text that XML must escape, and a byte XML 1.0 cannot carry.
		{Expectation: fail, Got: []string{`frame 2: ACCEPT by F:1 (-A F -m comment --comment "a<b&c ]]> \x01" -j ACCEPT)`}},
	}
	var b bytes.Buffer
	start := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	if err := WriteJUnit(&b, JUnitRun{Name: "e.txt", Start: start, Elapsed: 1500 * time.Millisecond, Properties: [][2]string{{"rules", "r&d.v4"}}}, results); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b.Bytes(), []byte(xml.Header)) {
		t.Errorf("no XML declaration:\n%s", b.String())
	}
	d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, b.String())
		}
	}
	var doc struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Suite    struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
			Time     string `xml:"time,attr"`
			Stamp    string `xml:"timestamp,attr"`
			Props    []struct {
				Name  string `xml:"name,attr"`
				Value string `xml:"value,attr"`
			} `xml:"properties>property"`
			Cases []struct {
				Name      string `xml:"name,attr"`
				Classname string `xml:"classname,attr"`
				Failure   *struct {
					Message string `xml:"message,attr"`
					Text    string `xml:",chardata"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Suite
	if doc.Tests != 2 || doc.Failures != 1 || s.Tests != 2 || s.Failures != 1 || s.Name != "e.txt" || s.Time != "1.500" || s.Stamp != "2024-05-01T10:00:00" {
		t.Errorf("counts/attributes: %+v", doc)
	}
	if len(s.Props) != 1 || s.Props[0].Value != "r&d.v4" {
		t.Errorf("properties %+v", s.Props)
	}
	if len(s.Cases) != 2 || s.Cases[0].Failure != nil || s.Cases[1].Failure == nil {
		t.Fatalf("cases %+v", s.Cases)
	}
	if s.Cases[1].Name != `line 2: flow tcp 10.0.0.1 <-> 10.0.0.2 DROP` || s.Cases[1].Classname != "e.txt" {
		t.Errorf("case name %q classname %q", s.Cases[1].Name, s.Cases[1].Classname)
	}
	fl := s.Cases[1].Failure
	if !strings.Contains(fl.Message, `comment "a<b&c ]]>`) || !strings.Contains(fl.Text, "e.txt:2:1: flow tcp") {
		t.Errorf("failure %+v", fl)
	}
}

// TestReportHotdrop: a TCP header cut short makes the xt tcp match drop the
// packet on the spot (tcp_mt's hotdrop); the record and trace say so. With
// --tcp-option the rule uses the xt module also under iptables-nft (port
// and flag matches alone are native nftables payload compares, which never
// hotdrop).
func TestReportHotdrop(t *testing.T) {
	f := newReportFixture(t, `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 22 --tcp-option 2 -j MARK --set-mark 0x2a
COMMIT
`)
	v := rpView(packet.ProtoTCP, "10.0.0.1", 40000, "10.0.1.1", 22, 30)
	v.L4 = v.L4[:10]
	var steps []string
	vd := f.eval(9, v, func(s Step) { steps = append(steps, f.rep.TraceStep(s)) })
	rec := f.rep.Record(vd)
	if rec.Verdict != "DROP" || !rec.Hotdrop || rec.Rule != "FORWARD:1" {
		t.Errorf("record %+v", rec)
	}
	want := "TRACE: filter:FORWARD:rule:1 -A FORWARD -p tcp -m tcp --dport 22 --tcp-option 2 -j MARK --set-xmark 0x2a/0xffffffff -> hotdrop (malformed packet dropped)"
	if len(steps) != 1 || steps[0] != want {
		t.Errorf("steps %q", steps)
	}
	if got := f.rep.TraceVerdict(vd); got != "TRACE: frame 9 verdict DROP (hotdrop) by filter:FORWARD:1" {
		t.Errorf("verdict line %q", got)
	}
}
