package queue

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
)

// qtpanic is a match that panics, registered for these tests only: it
// stands for a bug in an extension.
func init() {
	matchers.RegisterMatch(&matchers.MatchExt{
		Name: "qtpanic",
		New:  func() matchers.MatchBuilder { return panicBuilder{} },
	})
}

type panicBuilder struct{}

func (panicBuilder) Parse(string, []string, bool) error           { return errors.New("no options") }
func (panicBuilder) Build(*matchers.Rule) (matchers.Match, error) { return panicMatch{}, nil }

type panicMatch struct{}

func (panicMatch) Match(*matchers.Context) bool    { panic("qtpanic: extension bug") }
func (panicMatch) Save(b *strings.Builder)         {}
func (panicMatch) List(b *strings.Builder, _ bool) {}

type verdictRec struct {
	id      uint32
	verdict int
	opts    int
}

// fakeQueue records verdicts instead of sending them.
type fakeQueue struct {
	mu sync.Mutex
	v  []verdictRec
}

func (f *fakeQueue) Verdict(id uint32, verdict int, mark uint32, withMark bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	opts := 0
	if withMark {
		opts = 1
	}
	f.v = append(f.v, verdictRec{id, verdict, opts})
	return nil
}

func writeRules(t testing.TB, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rules.v4")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func testDaemon(t testing.TB, rules string, logOut io.Writer, logs *bytes.Buffer) *Daemon {
	t.Helper()
	d, err := New(Config{
		RulesPath: writeRules(t, rules),
		Hooks:     HookConfig{Hooks: []matchers.Hook{matchers.HookForward}, Queues: QueueRange{0, 0}, Bypass: true},
		Workers:   1,
		Logger:    slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	d.sink = NewLogSink(PlainLog(logOut), 0, 0)
	t.Cleanup(d.sink.Close)
	return d
}

var panicRules = testRules[:len(testRules)-len("COMMIT\n")] + "-A FORWARD -p tcp -m tcp --dport 99 -m qtpanic -j ACCEPT\nCOMMIT\n"

func TestDaemonHandle(t *testing.T) {
	var logLines, logs bytes.Buffer
	d := testDaemon(t, panicRules, &logLines, &logs)
	q := &fakeQueue{}
	w := d.newWorker()
	var replies [][]byte
	d.rej.Load().write = func(reply, _ []byte, to *unix.SockaddrInet4) error {
		replies = append(replies, append([]byte(nil), reply...))
		return nil
	}
	pkts := []struct {
		data    []byte
		verdict int
		opts    int
	}{
		{tcpSyn("10.0.1.2", "10.0.2.2", 40000, 80), nfqueue.NfAccept, 1}, // with the new mark
		{tcpSyn("10.0.1.2", "10.0.2.2", 40000, 81), nfqueue.NfDrop, 0},
		{tcpSyn("10.0.1.2", "10.0.2.2", 40000, 99), nfqueue.NfAccept, 0}, // panics: default ACCEPT
		{udp("10.0.1.2", "10.0.2.2", 5000, 53), nfqueue.NfDrop, 0},       // REJECT
		{icmpEcho("10.0.1.2", "10.0.2.2"), nfqueue.NfAccept, 0},          // the worker goes on
	}
	for i, p := range pkts {
		d.handle(w, &job{q: q, id: uint32(i + 1), data: p.data, hook: uint8(matchers.HookForward)})
	}
	if len(q.v) != len(pkts) {
		t.Fatalf("verdicts %+v", q.v)
	}
	for i, p := range pkts {
		if got := q.v[i]; got.id != uint32(i+1) || got.verdict != p.verdict || got.opts != p.opts {
			t.Errorf("packet %d: verdict %+v, want verdict %d with %d options", i+1, got, p.verdict, p.opts)
		}
	}
	st := d.Stats()
	if st.Accepted != 3 || st.Dropped != 2 || st.Marked != 1 || st.Panics != 1 || st.RejectEvents != 1 || st.LogEvents != 1 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(logs.String(), "panic while judging a packet") || !strings.Contains(logs.String(), "qtpanic: extension bug") {
		t.Errorf("panic not logged:\n%s", logs.String())
	}
	// The REJECT's reply went out before the drop: a port unreachable
	// quoting the UDP datagram, routed back to its source.
	if len(replies) != 1 || len(replies[0]) != 28+32 || replies[0][20] != 3 || replies[0][21] != 3 ||
		!bytes.Equal(replies[0][16:20], []byte{10, 0, 1, 2}) || !bytes.Equal(replies[0][28:], pkts[3].data) {
		t.Errorf("REJECT replies %x", replies)
	}
	if st.RejectReplies["sent"] != 1 || len(st.RejectReplies) != 1 {
		t.Errorf("reject replies %v", st.RejectReplies)
	}
	d.sink.Close()
	if got := logLines.String(); !strings.HasPrefix(got, "drop81: IN= OUT= SRC=10.0.1.2 DST=10.0.2.2 ") || strings.Count(got, "\n") != 1 {
		t.Errorf("LOG output %q", got)
	}
	// The rule counters are the Ruleset's: the counters file shows them.
	var buf bytes.Buffer
	if err := d.WriteCounters(&buf); err != nil {
		t.Fatal(err)
	}
	rs, err := engine.Parse("counters", &buf)
	if err != nil {
		t.Fatal(err)
	}
	fwd := rs.Table("filter").Chain("FORWARD")
	if p, b := fwd.Rules[2].Counters.Get(); p != 1 || b != 40 {
		t.Errorf("DROP rule counters %d/%d, want 1/40", p, b)
	}
	if p, _ := fwd.Rules[0].Counters.Get(); p != 1 {
		t.Errorf("mark ACCEPT rule counted %d packets, want 1", p)
	}
}

func TestDaemonDefaultDrop(t *testing.T) {
	var logs bytes.Buffer
	d, err := New(Config{
		RulesPath:   writeRules(t, panicRules),
		Hooks:       HookConfig{Hooks: []matchers.Hook{matchers.HookForward}, Queues: QueueRange{0, 0}},
		DefaultDrop: true,
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	d.sink = NewLogSink(DiscardLog(), 0, 0)
	defer d.sink.Close()
	q := &fakeQueue{}
	w := d.newWorker()
	d.handle(w, &job{q: q, id: 1, data: tcpSyn("10.0.1.2", "10.0.2.2", 1, 99), hook: uint8(matchers.HookForward)})
	d.handle(w, &job{q: q, id: 2, data: []byte{0x45}, hook: uint8(matchers.HookForward)})
	// A hook the rules have no chain for gets ACCEPT, as a kernel hook
	// without rules does.
	d.handle(w, &job{q: q, id: 3, data: tcpSyn("10.0.1.2", "10.0.2.2", 1, 99), hook: uint8(matchers.HookPrerouting)})
	want := []verdictRec{{1, nfqueue.NfDrop, 0}, {2, nfqueue.NfDrop, 0}}
	if len(q.v) != 3 || q.v[0] != want[0] || q.v[1] != want[1] {
		t.Errorf("verdicts %+v, want %+v", q.v, want)
	}
	if st := d.Stats(); st.Panics != 1 || st.Undecodable != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestNewChecksHooks(t *testing.T) {
	_, err := New(Config{
		RulesPath: writeRules(t, "*mangle\nCOMMIT\n"),
		Hooks:     HookConfig{Hooks: []matchers.Hook{matchers.HookInput}, Queues: QueueRange{0, 0}},
	})
	if err != nil {
		t.Fatalf("mangle has INPUT: %v", err)
	}
	// filter has no PREROUTING chain.
	_, err = New(Config{
		RulesPath: writeRules(t, "*filter\nCOMMIT\n"),
		Hooks:     HookConfig{Hooks: []matchers.Hook{matchers.HookPrerouting}, Queues: QueueRange{0, 0}},
	})
	if err == nil || !strings.Contains(err.Error(), "PREROUTING") {
		t.Errorf("want an error about PREROUTING, got %v", err)
	}
	if _, err := New(Config{RulesPath: writeRules(t, "*filter\n-A NOPE -j ACCEPT\nCOMMIT\n"),
		Hooks: HookConfig{Hooks: []matchers.Hook{matchers.HookInput}}}); err == nil {
		t.Error("a broken rules file was accepted")
	}
}

func TestReload(t *testing.T) {
	var logs bytes.Buffer
	d := testDaemon(t, testRules, io.Discard, &logs)
	old := d.Rules()
	path := d.cfg.RulesPath
	// A file that does not parse keeps the running rules.
	if err := os.WriteFile(path, []byte("*filter\n-A FORWARD -p tcp --dport 99999 -j ACCEPT\nCOMMIT\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(); err == nil {
		t.Fatal("reload of a broken file succeeded")
	}
	if d.Rules() != old {
		t.Error("a failed reload replaced the rules")
	}
	if !strings.Contains(logs.String(), "reload failed") || !strings.Contains(logs.String(), "99999") {
		t.Errorf("failed reload not explained:\n%s", logs.String())
	}
	// A file without the hooked chain is refused too.
	if err := os.WriteFile(path, []byte("*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -m tcp --dport 81 -j ACCEPT\nCOMMIT\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	q := &fakeQueue{}
	d.handle(d.newWorker(), &job{q: q, id: 1, data: tcpSyn("10.0.1.2", "10.0.2.2", 1, 81), hook: uint8(matchers.HookForward)})
	if len(q.v) != 1 || q.v[0].verdict != nfqueue.NfAccept {
		t.Errorf("after reload: %+v, want ACCEPT", q.v)
	}
	if st := d.Stats(); st.Reloads != 1 || st.ReloadFailures != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestParseKernelQueues(t *testing.T) {
	// The kernel's seq_show format: "%5u %6u %5u %1u %5u %5u %5u %8u %2d".
	in := "    0 123456     3 2 65535    17     4       99  1\n    1 123457     0 2 65535     0     0        5  1\n"
	got, err := ParseKernelQueues(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []KernelQueue{
		{Queue: 0, PortID: 123456, Waiting: 3, QueueDropped: 17, UserDropped: 4, IDSequence: 99},
		{Queue: 1, PortID: 123457, IDSequence: 5},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := ParseKernelQueues(strings.NewReader("0 1 2\n")); err == nil {
		t.Error("a short line was accepted")
	}
	if q, err := ReadKernelQueues(filepath.Join(t.TempDir(), "missing")); q != nil || err != nil {
		t.Errorf("missing file: %v, %v", q, err)
	}
}

func TestLogSinkRateLimit(t *testing.T) {
	var buf syncBuffer
	s := NewLogSink(PlainLog(&buf), 1, 3) // bucket of 3, refills once a second
	for i := 0; i < 10; i++ {
		s.Log(&matchers.Event{Kind: matchers.EventLog, Text: []byte("line")})
	}
	s.Close()
	if got := strings.Count(buf.String(), "line\n"); got != 3 || s.Written() != 3 || s.Dropped() != 7 {
		t.Errorf("wrote %d lines (Written %d, Dropped %d), want 3 and 7 dropped", got, s.Written(), s.Dropped())
	}
}

func TestLogSinkAllocs(t *testing.T) {
	s := NewLogSink(PlainLog(io.Discard), 0, 0)
	defer s.Close()
	ev := &matchers.Event{Kind: matchers.EventLog, Level: 4, Chain: "FORWARD", Rule: 2,
		Text: []byte("drop81: IN=eth0 OUT=eth1 SRC=10.0.1.2 DST=10.0.2.2 LEN=40 ")}
	for i := 0; i < 100; i++ {
		s.Log(ev)
	}
	if a := testing.AllocsPerRun(1000, func() { s.Log(ev) }); a > 0.1 {
		t.Errorf("Log allocates %.2f times per line", a)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestReadErrorPolicy(t *testing.T) {
	var cnt counters
	p := readErrorPolicy{cnt: &cnt}
	enobufs := &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", syscall.ENOBUFS)}
	for i := 0; i < 3; i++ {
		if stop, fatal := p.handle(enobufs); stop || fatal != nil {
			t.Fatalf("ENOBUFS: stop %v, fatal %v", stop, fatal)
		}
	}
	if cnt.enobufs.Load() != 3 || cnt.readErrs.Load() != 0 {
		t.Errorf("enobufs %d, read errors %d", cnt.enobufs.Load(), cnt.readErrs.Load())
	}
	// A verdict for a packet the kernel no longer holds comes back as an
	// error message: counted, not fatal.
	enoent := &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", syscall.ENOENT)}
	if stop, fatal := p.handle(enoent); stop || fatal != nil {
		t.Errorf("ENOENT: stop %v, fatal %v", stop, fatal)
	}
	closed := &netlink.OpError{Op: "receive", Err: net.ErrClosed}
	if stop, fatal := p.handle(closed); !stop || fatal == nil {
		t.Errorf("closed socket: stop %v, fatal %v", stop, fatal)
	}
	p = readErrorPolicy{cnt: &cnt}
	var stop bool
	var fatal error
	for i := 0; i <= maxConsecutiveReadErrors && !stop; i++ {
		stop, fatal = p.handle(enoent)
	}
	if !stop || fatal == nil || !strings.Contains(fatal.Error(), "in a row") {
		t.Errorf("endless errors: stop %v, fatal %v", stop, fatal)
	}
}
