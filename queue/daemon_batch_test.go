package queue

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/matchers"
)

// TestDaemonHandleBatch: a batch judged together gives every packet the
// verdict it gets alone, in order: a panic in one packet's rules, an
// undecodable packet and a hook out of range get the default verdict
// and the rest of the batch goes on; the panicking packet's new
// connection is forgotten, not left unconfirmed.
func TestDaemonHandleBatch(t *testing.T) {
	var logLines, logs bytes.Buffer
	d := testDaemon(t, panicRules, &logLines, &logs)
	d.rej.Load().write = func(reply, _ []byte, to *unix.SockaddrInet4) error { return nil }
	q := &fakeQueue{}
	w := d.newWorker()
	fwd := uint8(matchers.HookForward)
	pkts := []struct {
		data    []byte
		hook    uint8
		verdict int
		opts    int
	}{
		{tcpSyn("10.0.1.2", "10.0.2.2", 40000, 80), fwd, nfqueue.NfAccept, 1}, // with the new mark
		{tcpSyn("10.0.1.2", "10.0.2.2", 40000, 99), fwd, nfqueue.NfAccept, 0}, // panics: default ACCEPT
		{[]byte{0x45}, fwd, nfqueue.NfAccept, 0},                              // undecodable
		{udp("10.0.1.2", "10.0.2.2", 5000, 53), fwd, nfqueue.NfDrop, 0},       // REJECT
		{icmpEcho("10.0.1.2", "10.0.2.2"), 9, nfqueue.NfAccept, 0},            // no such hook
		{icmpEcho("10.0.1.2", "10.0.2.2"), fwd, nfqueue.NfAccept, 0},
		{tcpSyn("10.0.1.2", "10.0.2.2", 40001, 81), fwd, nfqueue.NfDrop, 0}, // LOG, DROP
	}
	var jobs []job
	for i, p := range pkts {
		jobs = append(jobs, job{q: q, id: uint32(i + 1), data: p.data, hook: p.hook})
	}
	d.handleBatch(w, jobs)
	if len(q.v) != len(pkts) {
		t.Fatalf("verdicts %+v", q.v)
	}
	for i, p := range pkts {
		if got := q.v[i]; got.id != uint32(i+1) || got.verdict != p.verdict || got.opts != p.opts {
			t.Errorf("packet %d: verdict %+v, want verdict %d with %d options", i+1, got, p.verdict, p.opts)
		}
	}
	st := d.Stats()
	if st.Accepted != 5 || st.Dropped != 2 || st.Panics != 1 || st.Undecodable != 2 || st.RejectEvents != 1 || st.LogEvents != 1 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(logs.String(), "panic while judging a packet") {
		t.Errorf("panic not logged:\n%s", logs.String())
	}
	// The accepted SYN and echo request are confirmed; the panicking SYN,
	// the rejected datagram and the dropped SYN left nothing behind.
	if cs := d.Conntrack().Stats(); cs.Entries != 2 || cs.Inserted != 2 || cs.New != 5 {
		t.Errorf("flow table %+v, want 5 new of which 2 confirmed and none left over", cs)
	}
}

// TestDaemonHandleBatchNoChain: a packet at a hook the rules have no
// chain for is accepted and not tracked, within a batch as alone.
func TestDaemonHandleBatchNoChain(t *testing.T) {
	var logs bytes.Buffer
	d := testDaemon(t, ctRules, io.Discard, &logs)
	q := &fakeQueue{}
	w := d.newWorker()
	query := udp("10.0.1.2", "10.0.2.2", 4000, 5353)
	d.handleBatch(w, []job{
		{q: q, id: 1, data: query, hook: uint8(matchers.HookPrerouting)},
		{q: q, id: 2, data: query, hook: uint8(matchers.HookForward)},
		{q: q, id: 3, data: udp("10.0.1.2", "10.0.2.2", 4000, 53), hook: uint8(matchers.HookPostrouting)},
	})
	for i, v := range q.v {
		if v.id != uint32(i+1) || v.verdict != nfqueue.NfAccept {
			t.Errorf("verdict %d: %+v, want ACCEPT", i, v)
		}
	}
	if st := d.Stats(); st.NoChain != 2 || st.Accepted != 3 {
		t.Errorf("stats %+v, want 2 without a chain", st)
	}
	// Only the FORWARD packet was tracked.
	if cs := d.Conntrack().Stats(); cs.New != 1 || cs.Entries != 1 {
		t.Errorf("flow table %+v, want the one FORWARD flow", cs)
	}
}

// TestReaderJudgesReadAsBatch: the reader collects a read's packets and
// judges them together when the read is done (judgeRead): a SYN and its
// retransmission in one read are judged as one at a time would judge
// them, the retransmission finding the connection the first confirmed.
func TestReaderJudgesReadAsBatch(t *testing.T) {
	d := testDaemon(t, testRules, io.Discard, &bytes.Buffer{})
	r := &reader{c: &nfqConn{num: 0}, w: d.newWorker()}
	vb := newVerdictBatch(r.c, true)
	syn := tcpSyn("10.0.1.2", "10.0.2.2", 40000, 80)
	now := time.Now()
	for id := uint32(1); id <= 2; id++ {
		d.readMsgs(context.Background(), r, vb, packetMsg(id, uint8(matchers.HookForward), syn, 0), now)
	}
	if len(r.batch) != 2 || vb.runN != 0 || d.inflight.Load() != 2 {
		t.Fatalf("after the read: %d packets waiting, %d verdicts, %d in flight; want 2 waiting, none given", len(r.batch), vb.runN, d.inflight.Load())
	}
	d.judgeRead(r)
	if len(r.batch) != 0 || d.inflight.Load() != 0 {
		t.Errorf("after judging: %d waiting, %d in flight", len(r.batch), d.inflight.Load())
	}
	// Both accepted with mangle's mark: one run of two verdicts, not yet
	// sent.
	if vb.runN != 2 || vb.runLast != 2 || vb.runV != nfAccept || vb.msgs != 0 {
		t.Errorf("verdicts: run of %d up to %d verdict %d after %d messages; want packets 1-2 accepted in one run", vb.runN, vb.runLast, vb.runV, vb.msgs)
	}
	if st := d.Stats(); st.Accepted != 2 || st.Dropped != 0 || st.CtDrops != 0 || st.Marked != 2 {
		t.Errorf("stats %+v", st)
	}
	if cs := d.Conntrack().Stats(); cs.New != 1 || cs.Found != 1 || cs.InsertFailed != 0 {
		t.Errorf("flow table %+v, want 1 new, 1 found, no clash", cs)
	}
	// The next read's retransmission finds the connection too.
	d.readMsgs(context.Background(), r, vb, packetMsg(3, uint8(matchers.HookForward), syn, 0), now)
	d.judgeRead(r)
	if st := d.Stats(); st.Accepted != 3 || st.CtDrops != 0 {
		t.Errorf("stats %+v, want the third SYN accepted", st)
	}
}

// TestWorkerBatches: a pool worker judges what waits in its channel in
// batches (more than one batch here), in order, and accounts for every
// packet.
func TestWorkerBatches(t *testing.T) {
	d := testDaemon(t, testRules, io.Discard, &bytes.Buffer{})
	w := d.newWorker()
	q := &fakeQueue{}
	const n = 2*judgeBatch + 5
	jobs := make(chan job, n)
	for i := range n {
		port := uint16(80)
		if i%3 == 0 {
			port = 82 // the FORWARD policy: DROP
		}
		jobs <- job{q: q, id: uint32(i + 1), data: tcpSyn("10.0.1.2", "10.0.2.2", uint16(10000+i), port), hook: uint8(matchers.HookForward)}
	}
	close(jobs)
	d.inflight.Add(n)
	d.work(w, jobs)
	if len(q.v) != n || d.inflight.Load() != 0 {
		t.Fatalf("%d verdicts, %d in flight; want %d, 0", len(q.v), d.inflight.Load(), n)
	}
	for i, v := range q.v {
		want := nfqueue.NfAccept
		if i%3 == 0 {
			want = nfqueue.NfDrop
		}
		if v.id != uint32(i+1) || v.verdict != want {
			t.Errorf("verdict %d: %+v, want %d", i, v, want)
		}
	}
	if cs := d.Conntrack().Stats(); cs.Entries != n-(n+2)/3 {
		t.Errorf("flow table %+v, want the %d accepted flows", cs, n-(n+2)/3)
	}
}

// TestJudgeAbandonBatch: when tracking a batch panics, the connections
// its packets created are forgotten and every tracked packet gets the
// default verdict; untracked ones are judged as usual.
func TestJudgeAbandonBatch(t *testing.T) {
	r := mustRules(t, batchRules)
	j, ct := ctJudge(t, matchers.HookForward, matchers.HookOutput, matchers.HookPostrouting)
	j.Default = matchers.Drop
	now := time.Unix(1700000000, 0)
	j.Begin()
	m := fwdMeta()
	m.Now = now
	j.Add(r, tcpSyn("10.0.1.2", "10.0.2.2", 40000, 22), &m)
	j.Add(r, udp("10.0.1.2", "10.0.2.2", 4000, 5353), &m)
	m.Hook = matchers.HookPostrouting // not tracked
	j.Add(r, udp("10.0.1.2", "10.0.2.2", 4001, 5353), &m)
	j.Track(now)
	if ct.Len() != 2 {
		t.Fatalf("%d entries after tracking, want 2 unconfirmed", ct.Len())
	}
	j.abandonBatch()
	for i := range 2 {
		if o := j.Eval(r, i); o.Verdict != matchers.Drop || !o.Panicked {
			t.Errorf("packet %d: %+v, want the default verdict", i, o)
		}
	}
	if o := j.Eval(r, 2); o.Verdict != matchers.Accept || o.Panicked {
		t.Errorf("untracked packet: %+v, want ACCEPT (no chain at POSTROUTING)", o)
	}
	if ct.Len() != 0 {
		t.Errorf("%d entries left after abandoning the batch", ct.Len())
	}
}
