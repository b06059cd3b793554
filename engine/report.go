package engine

import (
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// Report describes the outcomes of an offline run in the terms a user
// reads: the deciding rule as "CHAIN:N" with its canonical text, verdicts as
// JSON records (qtables test --verdicts) and traversals as TRACE lines
// (--trace). It is built once per run from the rule set, so that the per
// packet output does not re-print rules.
type Report struct {
	table  string
	chains map[string]*reportChain
}

type reportChain struct {
	builtin bool
	policy  string   // "-P CHAIN ACCEPT" for built-in chains
	rules   []string // "-A CHAIN ..." per rule, index = number - 1
}

// NewReport prepares the report for traversals of table in rs.
func NewReport(rs *Ruleset, table string) (*Report, error) {
	t := rs.Table(table)
	if t == nil {
		return nil, fmt.Errorf("the rules define no %s table", table)
	}
	r := &Report{table: table, chains: make(map[string]*reportChain, len(t.Chains))}
	for _, c := range t.Chains {
		rc := &reportChain{builtin: c.Builtin}
		if c.Builtin {
			rc.policy = "-P " + c.Name + " " + policyName(c.Policy)
		}
		for _, rule := range c.Rules {
			var b strings.Builder
			b.WriteString("-A " + c.Name)
			rule.SaveSpec(&b)
			rc.rules = append(rc.rules, b.String())
		}
		r.chains[c.Name] = rc
	}
	return r, nil
}

// Table is the table the report describes.
func (r *Report) Table() string { return r.table }

// hasRule reports whether chain exists and, for num > 0, has rule num;
// num == 0 asks for the chain's policy, which only built-in chains have.
func (r *Report) hasRule(chain string, num int) bool {
	c, ok := r.chains[chain]
	if !ok {
		return false
	}
	if num == 0 {
		return c.builtin
	}
	return num >= 1 && num <= len(c.rules)
}

// RuleRef names the rule that decided res: "CHAIN:N", or "CHAIN:policy"
// when a built-in chain's policy did.
func RuleRef(res Result) string {
	if res.Rule == 0 {
		return res.Chain + ":policy"
	}
	return res.Chain + ":" + strconv.Itoa(res.Rule)
}

// RuleText returns the canonical text of rule num of chain as
// iptables-save prints it ("-A FORWARD -p tcp ... -j ACCEPT"), or, for
// num == 0, the chain's policy ("-P FORWARD DROP").
func (r *Report) RuleText(chain string, num int) string {
	c, ok := r.chains[chain]
	if !ok {
		return ""
	}
	if num == 0 {
		return c.policy
	}
	if num < 1 || num > len(c.rules) {
		return ""
	}
	return c.rules[num-1]
}

// VerdictRecord is the JSON object qtables test --verdicts prints for one
// packet. Field names are a stable interface: scripts parse them.
type VerdictRecord struct {
	// Frame is the frame number in the capture, counting from 1.
	Frame int `json:"frame"`
	// Time is the capture timestamp, RFC 3339 with nanoseconds, UTC.
	Time string `json:"time"`
	// Src, Dst and Proto are present when the IPv4 header was decoded;
	// Proto is the name iptables-save prints ("tcp") or the number.
	Src   string `json:"src,omitempty"`
	Dst   string `json:"dst,omitempty"`
	Proto string `json:"proto,omitempty"`
	// Sport and Dport are present for TCP and UDP first fragments.
	Sport *uint16 `json:"sport,omitempty"`
	Dport *uint16 `json:"dport,omitempty"`
	// ICMPType and ICMPCode are present for ICMP.
	ICMPType *uint8 `json:"icmp_type,omitempty"`
	ICMPCode *uint8 `json:"icmp_code,omitempty"`
	// Skipped says why a packet was not evaluated ("non-ip", "truncated",
	// "malformed", "unsupported-link", "ttl-expired"); the verdict fields
	// below are then absent.
	Skipped string `json:"skipped,omitempty"`
	// Verdict is "ACCEPT", "DROP" or "QUEUE N".
	Verdict string `json:"verdict,omitempty"`
	// Queue is the queue number of a QUEUE verdict; Bypass reports
	// NFQUEUE's --queue-bypass.
	Queue  *uint16 `json:"queue,omitempty"`
	Bypass bool    `json:"bypass,omitempty"`
	// Hotdrop reports that a match dropped the packet as malformed.
	Hotdrop bool `json:"hotdrop,omitempty"`
	// Mark and CtMark are the packet and conntrack marks after the
	// traversal, as hexadecimal strings ("0x1").
	Mark   string `json:"mark,omitempty"`
	CtMark string `json:"ctmark,omitempty"`
	// Rule names the deciding rule, "CHAIN:N" or "CHAIN:policy", and
	// RuleText is its canonical text ("-A CHAIN ..." or "-P CHAIN DROP").
	Rule     string `json:"rule,omitempty"`
	RuleText string `json:"rule_text,omitempty"`
	// Events are the LOG lines and REJECT replies targets asked for, in
	// order.
	Events []EventRecord `json:"events,omitempty"`
	// Trace holds the TRACE lines of a traced frame when verdicts are
	// printed as JSON.
	Trace []string `json:"trace,omitempty"`
}

// EventRecord is one event of a VerdictRecord.
type EventRecord struct {
	// Type is "LOG" or "REJECT".
	Type string `json:"type"`
	// Rule is the rule whose target raised the event, "CHAIN:N".
	Rule string `json:"rule"`
	// Level is a LOG event's syslog level (0..7) and Text its line, as the
	// kernel would log it (prefix included).
	Level *uint8 `json:"level,omitempty"`
	Text  string `json:"text,omitempty"`
	// With is a REJECT event's --reject-with type.
	With string `json:"with,omitempty"`
}

// Record builds the JSON record of v.
func (r *Report) Record(v *Verdict) VerdictRecord {
	rec := VerdictRecord{Frame: v.Frame}
	p := v.View
	rec.Time = p.Timestamp.UTC().Format(time.RFC3339Nano)
	if p.Family == 4 && p.Src.IsValid() {
		rec.Src, rec.Dst, rec.Proto = p.Src.String(), p.Dst.String(), ProtoName(p.Proto)
		if p.HasPorts {
			sp, dp := p.SrcPort, p.DstPort
			rec.Sport, rec.Dport = &sp, &dp
		}
		if p.Proto == packet.ProtoICMP && p.HasTransport {
			t, c := p.ICMPType, p.ICMPCode
			rec.ICMPType, rec.ICMPCode = &t, &c
		}
	}
	if v.Skipped {
		rec.Skipped = v.SkipReason
		return rec
	}
	res := v.Result
	rec.Verdict = res.Verdict.String()
	if res.Verdict.Base() == matchers.Queue {
		q := uint16(res.Verdict >> 16)
		rec.Queue = &q
		rec.Bypass = res.Verdict&matchers.QueueBypass != 0
	}
	rec.Hotdrop = res.Hotdrop
	rec.Mark = "0x" + strconv.FormatUint(uint64(v.Ctx.Mark), 16)
	rec.CtMark = "0x" + strconv.FormatUint(uint64(v.Ctx.CtMark), 16)
	rec.Rule = RuleRef(res)
	rec.RuleText = r.RuleText(res.Chain, res.Rule)
	for _, e := range v.Ctx.Events {
		er := EventRecord{Rule: e.Chain + ":" + strconv.Itoa(e.Rule)}
		switch e.Kind {
		case matchers.EventLog:
			lvl := e.Level
			er.Type, er.Level, er.Text = "LOG", &lvl, string(e.Text)
		case matchers.EventReject:
			er.Type, er.With = "REJECT", e.Reject.String()
		default:
			er.Type = "EVENT(" + strconv.Itoa(int(e.Kind)) + ")"
		}
		rec.Events = append(rec.Events, er)
	}
	return rec
}

// TraceStep formats one step of a traversal in the spirit of the kernel's
// TRACE target ("TRACE: table:chain:type:rulenum"), adding the rule's text
// and, for rules, whether it matched and which part failed:
//
//	TRACE: filter:FORWARD:rule:1 -A FORWARD -p udp -j DROP -> no match (-p)
//	TRACE: filter:FORWARD:rule:2 -A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT -> match
//	TRACE: filter:LOGGING:return:3
//	TRACE: filter:FORWARD:policy:4 -P FORWARD DROP
//
// Unlike the kernel, which logs only the rules that match, every rule the
// packet is compared with is listed.
func (r *Report) TraceStep(s Step) string {
	var b strings.Builder
	b.WriteString("TRACE: " + r.table + ":" + s.Chain + ":")
	switch s.Kind {
	case StepReturn:
		b.WriteString("return:" + strconv.Itoa(s.Num))
	case StepPolicy:
		b.WriteString("policy:" + strconv.Itoa(s.Num))
		if p := r.RuleText(s.Chain, 0); p != "" {
			b.WriteString(" " + p)
		}
	default:
		b.WriteString("rule:" + strconv.Itoa(s.Num))
		text := r.RuleText(s.Chain, s.Num)
		if text == "" && s.Rule != nil {
			text = "-A " + s.Chain + " " + s.Rule.String()
		}
		if text != "" {
			b.WriteString(" " + text)
		}
		switch {
		case s.Matched:
			b.WriteString(" -> match")
		case s.Failed == "hotdrop":
			b.WriteString(" -> hotdrop (malformed packet dropped)")
		default:
			b.WriteString(" -> no match (" + s.Failed + ")")
		}
	}
	return b.String()
}

// TraceHeader is the first TRACE line of a traced frame: the frame number,
// its timestamp and the packet as the hook sees it, in the LOG target's
// KEY=value style.
func TraceHeader(v *Verdict, in, out string) string {
	p := v.View
	var b strings.Builder
	b.WriteString("TRACE: frame " + strconv.Itoa(v.Frame) + " " + p.Timestamp.UTC().Format(time.RFC3339Nano))
	b.WriteString(" IN=" + in + " OUT=" + out)
	if p.Family == 4 && p.Src.IsValid() {
		b.WriteString(" SRC=" + p.Src.String() + " DST=" + p.Dst.String())
		b.WriteString(" LEN=" + strconv.Itoa(p.Len) + " TTL=" + strconv.Itoa(int(p.TTL)))
		b.WriteString(" PROTO=" + strings.ToUpper(ProtoName(p.Proto)))
		if p.HasPorts {
			b.WriteString(" SPT=" + strconv.Itoa(int(p.SrcPort)) + " DPT=" + strconv.Itoa(int(p.DstPort)))
		}
		if p.Proto == packet.ProtoICMP && p.HasTransport {
			b.WriteString(" TYPE=" + strconv.Itoa(int(p.ICMPType)) + " CODE=" + strconv.Itoa(int(p.ICMPCode)))
		}
	}
	return b.String()
}

// TraceVerdict is the last TRACE line of a traced frame: the verdict, the
// deciding rule, a non-zero mark and the events.
func (r *Report) TraceVerdict(v *Verdict) string {
	prefix := "TRACE: frame " + strconv.Itoa(v.Frame) + " "
	if v.Skipped {
		return prefix + "skipped (" + v.SkipReason + ")"
	}
	res := v.Result
	var b strings.Builder
	b.WriteString(prefix + "verdict " + res.Verdict.String())
	if res.Hotdrop {
		b.WriteString(" (hotdrop)")
	}
	b.WriteString(" by " + r.table + ":" + RuleRef(res))
	if v.Ctx.Mark != 0 {
		b.WriteString(" mark 0x" + strconv.FormatUint(uint64(v.Ctx.Mark), 16))
	}
	if v.Ctx.CtMark != 0 {
		b.WriteString(" ctmark 0x" + strconv.FormatUint(uint64(v.Ctx.CtMark), 16))
	}
	for _, e := range v.Ctx.Events {
		switch e.Kind {
		case matchers.EventLog:
			b.WriteString(" LOG(" + e.Chain + ":" + strconv.Itoa(e.Rule) + ")")
		case matchers.EventReject:
			b.WriteString(" REJECT(" + e.Reject.String() + ")")
		}
	}
	return b.String()
}

// JUnit XML, in the shape Jenkins, GitLab and GitHub test reporters read:
// one <testsuite> per expectations file, one <testcase> per expectation.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr,omitempty"`
	Properties []junitProperty `xml:"properties>property,omitempty"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	File      string        `xml:"file,attr,omitempty"`
	Line      int           `xml:"line,attr,omitempty"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// JUnitRun describes the run a JUnit report is written for.
type JUnitRun struct {
	// Name names the suite, conventionally the expectations file.
	Name string
	// Start and Elapsed time the run.
	Start   time.Time
	Elapsed time.Duration
	// Properties are recorded in the suite (rules file, capture, chain).
	Properties [][2]string
}

// WriteJUnit writes results as JUnit XML: one testcase per expectation,
// named by its line, with a <failure> that says what was expected and what
// happened when it did not hold.
func WriteJUnit(w io.Writer, run JUnitRun, results []ExpectResult) error {
	secs := strconv.FormatFloat(run.Elapsed.Seconds(), 'f', 3, 64)
	s := junitSuite{Name: run.Name, Time: secs}
	if !run.Start.IsZero() {
		s.Timestamp = run.Start.UTC().Format("2006-01-02T15:04:05")
	}
	for _, p := range run.Properties {
		s.Properties = append(s.Properties, junitProperty{Name: p[0], Value: p[1]})
	}
	for _, res := range results {
		e := res.Expectation
		c := junitCase{
			Name:      fmt.Sprintf("line %d: %s", e.Pos.Line, e.Text),
			Classname: run.Name,
			File:      e.Pos.File,
			Line:      e.Pos.Line,
			Time:      "0",
		}
		s.Tests++
		if !res.Passed {
			s.Failures++
			c.Failure = &junitFailure{
				Message: res.Summary(),
				Type:    "ExpectationFailed",
				Text:    e.Pos.String() + ": " + e.Text + "\n" + strings.Join(res.Got, "\n") + "\n",
			}
		}
		s.Cases = append(s.Cases, c)
	}
	doc := junitSuites{Name: "qtables test", Tests: s.Tests, Failures: s.Failures, Time: secs, Suites: []junitSuite{s}}
	out, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("junit: %w", err)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	if _, err := w.Write(append(out, '\n')); err != nil {
		return err
	}
	return nil
}
