package queue

import (
	"testing"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/matchers"
)

// ctRules: replies of known connections pass; new UDP only to port 5353,
// marked 0x7 by CONNMARK; a connmark rule ahead of the generic one counts
// the marked connections' later packets.
const ctRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m connmark --mark 0x7 -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p udp -m conntrack --ctstate NEW -m udp --dport 5353 -j CONNMARK --set-xmark 0x7/0xffffffff
-A FORWARD -p udp -m conntrack --ctstate NEW -m udp --dport 5353 -j ACCEPT
COMMIT
`

func ctJudge(t testing.TB, hooks ...matchers.Hook) (*Judge, *conntrack.Table) {
	ct := conntrack.New(conntrack.Config{MaxEntries: 1000})
	j := NewJudge(matchers.Accept)
	j.SetConntrack(ct, hooks)
	return j, ct
}

func TestJudgeConntrack(t *testing.T) {
	r := mustRules(t, ctRules)
	j, ct := ctJudge(t, matchers.HookForward)
	m := fwdMeta()
	step := func(name string, p []byte, verdict matchers.Verdict, rule int) {
		t.Helper()
		m.Now = m.Now.Add(time.Millisecond)
		out := j.Judge(r, p, &m)
		if out.Verdict != verdict || out.Decided.Rule != rule {
			t.Errorf("%s: %v by rule %d, want %v by rule %d", name, out.Verdict, out.Decided.Rule, verdict, rule)
		}
	}
	// The reply before any query: NEW, dropped by the policy, and not
	// kept (Discard), so the table stays empty.
	step("unsolicited reply", udp("10.0.2.2", "10.0.1.2", 5353, 4000), matchers.Drop, 0)
	if n := ct.Len(); n != 0 {
		t.Fatalf("a dropped first packet left %d flows", n)
	}
	step("query", udp("10.0.1.2", "10.0.2.2", 4000, 5353), matchers.Accept, 4)
	if n := ct.Len(); n != 1 {
		t.Fatalf("an accepted first packet left %d flows, want 1 (confirmed)", n)
	}
	// CONNMARK wrote the mark into the table; the reply reads it.
	step("reply", udp("10.0.2.2", "10.0.1.2", 5353, 4000), matchers.Accept, 1)
	step("second query", udp("10.0.1.2", "10.0.2.2", 4000, 5353), matchers.Accept, 1)
	// The server's own new flow to the client: NEW, not port 5353.
	step("server to client", udp("10.0.2.2", "10.0.1.2", 4001, 9000), matchers.Drop, 0)
	var e conntrack.Entry
	ct.Range(m.Now, func(x *conntrack.Entry) bool { e = *x; return true })
	if e.Mark() != 7 || e.Packets(conntrack.DirOriginal) != 2 || e.Packets(conntrack.DirReply) != 1 {
		t.Errorf("flow: mark %#x, %d/%d packets, want 0x7, 2/1", e.Mark(), e.Packets(conntrack.DirOriginal), e.Packets(conntrack.DirReply))
	}
}

func TestJudgeConntrackHooks(t *testing.T) {
	r := mustRules(t, ctRules)
	// With PREROUTING hooked too, FORWARD does not track again: its rules
	// see no connection (INVALID), so even the reply is dropped there.
	j, ct := ctJudge(t, matchers.HookPrerouting, matchers.HookForward)
	m := fwdMeta()
	if out := j.Judge(r, udp("10.0.1.2", "10.0.2.2", 4000, 5353), &m); out.Verdict != matchers.Drop {
		t.Errorf("untracked at FORWARD: %v, want DROP (INVALID matches no state rule)", out.Verdict)
	}
	if ct.Len() != 0 {
		t.Errorf("FORWARD tracked although PREROUTING is hooked")
	}
	m.Hook = matchers.HookPrerouting
	m.Out = ""
	j.Judge(r, udp("10.0.1.2", "10.0.2.2", 4000, 5353), &m)
	if ct.Len() != 1 {
		t.Errorf("PREROUTING did not track: %d flows", ct.Len())
	}
}

func TestJudgeConntrackFull(t *testing.T) {
	r := mustRules(t, ctRules)
	ct := conntrack.New(conntrack.Config{MaxEntries: 1, Shards: 1})
	j := NewJudge(matchers.Accept)
	j.SetConntrack(ct, []matchers.Hook{matchers.HookForward})
	m := fwdMeta()
	// Assure the first flow (a reply, then more than 2 s of traffic: UDP
	// stream), so early drop cannot evict it.
	j.Judge(r, udp("10.0.1.2", "10.0.2.2", 4000, 5353), &m)
	m.Now = m.Now.Add(time.Millisecond)
	j.Judge(r, udp("10.0.2.2", "10.0.1.2", 5353, 4000), &m)
	m.Now = m.Now.Add(3 * time.Second)
	j.Judge(r, udp("10.0.1.2", "10.0.2.2", 4000, 5353), &m)
	out := j.Judge(r, udp("10.0.1.2", "10.0.2.2", 4002, 5353), &m)
	if out.Verdict != matchers.Drop || !out.CtDrop {
		t.Errorf("new flow in a full table: %+v, want a conntrack drop", out)
	}
}

// TestJudgeConntrackAllocs: tracking, the stateful matches and CONNMARK
// allocate nothing per packet once the flow exists.
func TestJudgeConntrackAllocs(t *testing.T) {
	r := mustRules(t, ctRules)
	j, _ := ctJudge(t, matchers.HookForward)
	m := fwdMeta()
	q, a := udp("10.0.1.2", "10.0.2.2", 4000, 5353), udp("10.0.2.2", "10.0.1.2", 5353, 4000)
	j.Judge(r, q, &m)
	allocs := testing.AllocsPerRun(1000, func() {
		m.Now = m.Now.Add(time.Microsecond)
		j.Judge(r, q, &m)
		j.Judge(r, a, &m)
	})
	if allocs != 0 {
		t.Errorf("tracked Judge allocates %.1f times per 2 packets, want 0", allocs)
	}
}

func BenchmarkJudgeConntrack(b *testing.B) {
	r := mustRules(b, ctRules)
	j, _ := ctJudge(b, matchers.HookForward)
	m := fwdMeta()
	q, a := udp("10.0.1.2", "10.0.2.2", 4000, 5353), udp("10.0.2.2", "10.0.1.2", 5353, 4000)
	j.Judge(r, q, &m)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Now = m.Now.Add(time.Microsecond)
		if i&1 == 0 {
			j.Judge(r, q, &m)
		} else {
			j.Judge(r, a, &m)
		}
		i++
	}
}
