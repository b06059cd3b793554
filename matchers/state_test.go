package matchers

import (
	"testing"

	"github.com/qtables/qtables/conntrack"
)

// stateFmt were checked against iptables-save / iptables -L[ -n] 1.8.9.
var stateFmt = []fmtVector{
	{opts: "--state NEW", save: " --state NEW", listN: " state NEW"},
	{opts: "--state ESTABLISHED,RELATED", save: " --state RELATED,ESTABLISHED", listN: " state RELATED,ESTABLISHED"},
	{opts: "! --state ESTABLISHED,RELATED,INVALID,UNTRACKED,NEW", save: " ! --state INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED",
		listN: " ! state INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED"},
	{opts: "--state untracked", save: " --state UNTRACKED", listN: " state UNTRACKED"},
	{opts: "--state NEW,NEW", save: " --state NEW", listN: " state NEW"},
	{opts: "--state NeW", save: " --state NEW", listN: " state NEW"},
	// Abbreviations: any prefix, tried in the order INVALID, NEW,
	// ESTABLISHED, RELATED, UNTRACKED.
	{opts: "--state E", save: " --state ESTABLISHED", listN: " state ESTABLISHED"},
	{opts: "--state N,R", save: " --state NEW,RELATED", listN: " state NEW,RELATED"},
	{opts: "--state i", save: " --state INVALID", listN: " state INVALID"},
}

var stateErr = []errVector{
	{opts: "--state FOO", err: `Bad state "FOO"`},
	{opts: "--state NEW,", err: `requires a list of states`},
	{opts: "--state ,NEW", err: `Bad state ",NEW"`},
	{opts: "--state NEW,,INVALID", err: `Bad state ",INVALID"`},
	{opts: "--state NEWX", err: `Bad state "NEWX"`},
	{opts: "--state SNAT", err: `Bad state "SNAT"`},
	{opts: "--state NEW --state INVALID", err: "only be used once"},
	{opts: "", err: "must be specified"},
}

func TestStateFormats(t *testing.T) { runFmtVectors(t, "state", stateFmt) }

func TestStateErrors(t *testing.T) { runErrVectors(t, "state", stateErr) }

// TestStateMatch walks connections through the table and checks the state
// each packet has, as nf_conntrack assigns it (spec §7.3), through -m
// state and its negation.
func TestStateMatch(t *testing.T) {
	r := newCtRig(t)
	newM := mustBuild(t, "state", ruleAny, "--state NEW")
	estRel := mustBuild(t, "state", ruleAny, "--state ESTABLISHED,RELATED")
	inv := mustBuild(t, "state", ruleAny, "--state INVALID")
	notNew := mustBuild(t, "state", ruleAny, "! --state NEW")
	untr := mustBuild(t, "state", ruleAny, "--state UNTRACKED")
	udpOut := udpDgram(t, ipC, ipS, 4000, 53, 20)
	steps := []struct {
		name  string
		pkt   []byte
		state string // NEW, EST (ESTABLISHED or RELATED), INVALID
	}{
		{"syn", tcpSeg(t, ipC, ipS, 1234, 80, "S", 1000, 0, 0), "NEW"},
		{"syn retransmitted", tcpSeg(t, ipC, ipS, 1234, 80, "S", 1000, 0, 0), "NEW"},
		{"syn/ack", tcpSeg(t, ipS, ipC, 80, 1234, "SA", 5000, 1001, 0), "EST"},
		{"ack", tcpSeg(t, ipC, ipS, 1234, 80, "A", 1001, 5001, 0), "EST"},
		{"data", tcpSeg(t, ipC, ipS, 1234, 80, "PA", 1001, 5001, 100), "EST"},
		{"stray fin", tcpSeg(t, ipC, ipS, 999, 80, "F", 1, 0, 0), "INVALID"},
		{"stray syn/ack", tcpSeg(t, ipS, ipC, 80, 998, "SA", 1, 2, 0), "INVALID"},
		{"mid-stream ack is picked up", tcpSeg(t, ipC, ipS, 997, 80, "A", 1, 2, 0), "NEW"},
		{"udp query", udpOut, "NEW"},
		{"udp answer", udpDgram(t, ipS, ipC, 53, 4000, 40), "EST"},
		{"port unreachable quoting it", icmpMsg(t, ipS, ipC, 3, 3, 0, udpOut[:28]), "EST"},
		{"error quoting nothing", icmpMsg(t, ipR, ipC, 11, 0, 0, udpDgram(t, ipC, ipS2, 1, 2, 0)[:28]), "INVALID"},
		{"echo request", icmpMsg(t, ipC, ipS, 8, 0, 77, nil), "NEW"},
		{"echo reply", icmpMsg(t, ipS, ipC, 0, 0, 77, nil), "EST"},
		{"echo reply without request", icmpMsg(t, ipS, ipC, 0, 0, 78, nil), "INVALID"},
	}
	for _, s := range steps {
		c := r.track(s.pkt)
		got := map[string]bool{"NEW": newM.Match(c), "EST": estRel.Match(c), "INVALID": inv.Match(c)}
		for st, m := range got {
			if m != (st == s.state) {
				t.Errorf("%s: --state %s = %v, want state %s", s.name, st, m, s.state)
			}
		}
		if notNew.Match(c) == (s.state == "NEW") {
			t.Errorf("%s: ! --state NEW = %v", s.name, notNew.Match(c))
		}
		if untr.Match(c) {
			t.Errorf("%s: --state UNTRACKED matched", s.name)
		}
		r.accept()
	}
	// RELATED is its own state.
	rel := mustBuild(t, "state", ruleAny, "--state RELATED")
	c := r.track(icmpMsg(t, ipS, ipC, 3, 3, 0, udpOut[:28]))
	if !rel.Match(c) {
		t.Error("an ICMP error quoting a tracked flow is not RELATED")
	}
	// A packet the caller exempted from tracking.
	var ctx Context
	ctx.SetConntrack(nil, &conntrack.Result{Info: conntrack.CtUntracked})
	if !untr.Match(&ctx) || inv.Match(&ctx) || !notNew.Match(&ctx) {
		t.Error("an untracked packet is not UNTRACKED only")
	}
	// Nothing tracked the packet at all: INVALID.
	ctx = Context{}
	if !inv.Match(&ctx) {
		t.Error("a packet without tracking is not INVALID")
	}
}
