package kernelct

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/conntrack"
)

// fakeKernel answers ctnetlink requests from a table of entries, with the
// mark semantics of a current kernel or, with oldMark, of one that
// ignores CTA_MARK_MASK.
type fakeKernel struct {
	mu      sync.Mutex
	entries []Entry
	oldMark bool
	sent    []uint8 // message types received
	// block, when set, makes Execute wait for a deadline in the past.
	block    bool
	deadline chan struct{}
	closed   bool
	failNext error // returned (once) instead of an answer
}

func (k *fakeKernel) SetDeadline(t time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !t.IsZero() && t.Before(time.Now()) && k.deadline != nil {
		close(k.deadline)
		k.deadline = nil
	}
	return nil
}

func (k *fakeKernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	return nil
}

// parseTuple decodes a CTA_TUPLE_* attribute of a request.
func parseTuple(a netfilter.Attribute) (Tuple, error) {
	var t Tuple
	for _, c := range a.Children {
		for _, g := range c.Children {
			switch {
			case c.Type == ctaTupleIP && (g.Type == ctaIPv4Src || g.Type == ctaIPv4Dst):
				ad, _ := netip.AddrFromSlice(g.Data)
				if g.Type == ctaIPv4Src {
					t.Src = ad.As16()
				} else {
					t.Dst = ad.As16()
				}
				t.Family = 4
			case c.Type == ctaTupleProto && g.Type == ctaProtoNum:
				t.Proto = g.Data[0]
			case c.Type == ctaTupleProto && g.Type == ctaProtoSrcPort:
				t.SrcPort = g.Uint16()
			case c.Type == ctaTupleProto && g.Type == ctaProtoDstPort:
				t.DstPort = g.Uint16()
			}
		}
	}
	if t.Family == 0 || t.Proto == 0 {
		return t, fmt.Errorf("incomplete tuple %v", a)
	}
	return t, nil
}

func (k *fakeKernel) Execute(req []byte, kind replyKind, fn func(*nlMsg) error) error {
	k.mu.Lock()
	if k.block {
		k.deadline = make(chan struct{})
		d := k.deadline
		k.mu.Unlock()
		<-d
		return fmt.Errorf("kernelct: netlink receive: %w", os.ErrDeadlineExceeded)
	}
	defer k.mu.Unlock()
	if err := k.failNext; err != nil {
		k.failNext = nil
		return err
	}
	m, _, err := nextMsg(req)
	if err != nil {
		return err
	}
	typ := uint8(m.typ)
	k.sent = append(k.sent, typ)
	attrs, err := netfilter.UnmarshalAttributes(m.data[4:])
	if err != nil {
		return err
	}
	var (
		tu        Tuple
		mark      *uint32
		mask      *uint32
		haveTuple bool
	)
	for _, a := range attrs {
		switch a.Type {
		case ctaTupleOrig:
			if tu, err = parseTuple(a); err != nil {
				return err
			}
			haveTuple = true
		case ctaMark:
			v := a.Uint32()
			mark = &v
		case ctaMarkMask:
			v := a.Uint32()
			mask = &v
		}
	}
	if !haveTuple {
		return kernelError{unix.EINVAL}
	}
	i := slicesIndex(k.entries, tu)
	if i < 0 {
		return kernelError{unix.ENOENT}
	}
	e := &k.entries[i]
	switch typ {
	case msgGet:
		out := flowMsg(testingTB{}, msgNew, unix.NLM_F_MULTI, *e)
		return fn(&out)
	case msgNew:
		if mark != nil {
			keep := uint32(0) // the kernel's rule: (mark & ^mask) ^ value
			if mask != nil && !k.oldMark {
				keep = ^*mask
			}
			e.Mark = e.Mark&keep ^ *mark
		}
		return nil
	case msgDelete:
		k.entries = append(k.entries[:i], k.entries[i+1:]...)
		return nil
	}
	return kernelError{unix.EOPNOTSUPP}
}

func slicesIndex(es []Entry, t Tuple) int {
	for i := range es {
		if es[i].Orig == t || es[i].Reply == t {
			return i
		}
	}
	return -1
}

// testingTB lets flowMsg run outside a test's goroutine; it panics
// instead of failing, which only a bug in the test itself triggers.
type testingTB struct{ testing.TB }

func (testingTB) Helper()               {}
func (testingTB) Fatal(args ...any)     { panic(fmt.Sprint(args...)) }
func (testingTB) Fatalf(string, ...any) { panic("fatal") }

func fakeConn(k *fakeKernel, log *slog.Logger) (*Conn, *int) {
	dials := 0
	c := newConn(log, func() (requester, error) { dials++; return k, nil })
	return c, &dials
}

func markOf(t *testing.T, c *Conn, tu Tuple) uint32 {
	t.Helper()
	e, _, err := c.Lookup(t.Context(), tu)
	if err != nil {
		t.Fatal(err)
	}
	return e.Mark
}

func TestSetMarkProbe(t *testing.T) {
	e := sampleEntry()
	for _, old := range []bool{false, true} {
		t.Run(fmt.Sprintf("oldKernel=%v", old), func(t *testing.T) {
			k := &fakeKernel{entries: []Entry{e}, oldMark: old}
			k.entries[0].Mark = 0
			c, _ := fakeConn(k, slog.New(slog.DiscardHandler))
			ctx := t.Context()
			// Bits outside the mask are all zero: both semantics give the
			// same mark, so the probe cannot decide yet.
			if err := c.SetMark(ctx, e.Orig, 0x0f, 0xff); err != nil {
				t.Fatal(err)
			}
			if got := markOf(t, c, e.Orig); got != 0x0f {
				t.Fatalf("mark %#x, want 0x0f", got)
			}
			if c.markMask.Load() != maskUnknown {
				t.Fatal("probe decided from an indistinguishable case")
			}
			// Now bits outside the mask are set: the probe decides.
			if err := c.SetMark(ctx, e.Reply, 0xa000, 0xf000); err != nil {
				t.Fatal(err)
			}
			if got := markOf(t, c, e.Orig); got != 0xa00f {
				t.Fatalf("after probe (and repair) mark %#x, want 0xa00f", got)
			}
			want, rmw := maskSupported, uint64(0)
			if old {
				want, rmw = maskUnsupported, 1
			}
			if c.markMask.Load() != want || c.Stats().MarkRMW != rmw {
				t.Fatalf("mask support %d, MarkRMW %d; want %d, %d", c.markMask.Load(), c.Stats().MarkRMW, want, rmw)
			}
			// Decided: later calls use the mask or read-modify-write.
			k.sent = nil
			if err := c.SetMark(ctx, e.Orig, 0x0500, 0x0f00); err != nil {
				t.Fatal(err)
			}
			wantSent := []uint8{msgNew}
			if old {
				wantSent = []uint8{msgGet, msgNew}
			}
			if fmt.Sprint(k.sent) != fmt.Sprint(wantSent) {
				t.Errorf("requests %v, want %v", k.sent, wantSent)
			}
			if got := markOf(t, c, e.Orig); got != 0xa50f {
				t.Errorf("mark %#x, want 0xa50f", got)
			}
		})
	}
}

func TestErrNotFoundAndReplacement(t *testing.T) {
	e := sampleEntry()
	k := &fakeKernel{entries: []Entry{e}}
	c, dials := fakeConn(k, nil)
	ctx := t.Context()
	missing := e.Orig
	missing.DstPort++
	if _, _, err := c.Lookup(ctx, missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup: %v", err)
	}
	if err := c.Delete(ctx, missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete: %v", err)
	}
	if *dials != 1 || k.closed {
		t.Errorf("a kernel error replaced the socket (%d dials, closed %v)", *dials, k.closed)
	}
	// A socket-level failure (here an errno of the socket itself, not an
	// answer of the kernel) replaces the socket on the next request.
	k.failNext = fmt.Errorf("kernelct: netlink receive: %w", syscall.ENOBUFS)
	if _, _, err := c.Lookup(ctx, e.Orig); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup with a broken socket: %v", err)
	}
	if !k.closed {
		t.Error("broken socket not closed")
	}
	if _, dir, err := c.Lookup(ctx, e.Reply); err != nil || dir != conntrack.DirReply {
		t.Fatalf("Lookup after the failure: %v %v", dir, err)
	}
	if *dials != 2 {
		t.Errorf("%d dials, want 2", *dials)
	}
	if err := c.Delete(ctx, e.Reply); err != nil {
		t.Fatal(err)
	}
	if len(k.entries) != 0 {
		t.Error("Delete by the reply tuple left the entry")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, e.Orig); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete on a closed Conn: %v", err)
	}
}

func TestExecuteCancel(t *testing.T) {
	e := sampleEntry()
	k := &fakeKernel{entries: []Entry{e}, block: true}
	c, dials := fakeConn(k, nil)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Lookup(ctx, e.Orig)
		errc <- err
	}()
	// Cancel once the request is blocked in the fake kernel.
	for {
		k.mu.Lock()
		blocked := k.deadline != nil
		k.mu.Unlock()
		if blocked {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Lookup returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelling the context did not interrupt the request")
	}
	// The socket is kept (late replies are skipped by sequence number).
	k.mu.Lock()
	k.block = false
	k.mu.Unlock()
	if _, _, err := c.Lookup(t.Context(), e.Orig); err != nil {
		t.Fatal(err)
	}
	if *dials != 1 || k.closed {
		t.Errorf("cancellation replaced the socket (%d dials)", *dials)
	}

	// An interrupted dump replaces the socket: the kernel would answer
	// the next dump on it with EBUSY until the old one was read out.
	k.mu.Lock()
	k.block = true
	k.mu.Unlock()
	dctx, dcancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer dcancel()
	if _, err := c.List(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("List past its deadline: %v", err)
	}
	if !k.closed {
		t.Error("the socket of an interrupted dump was kept")
	}
	k.mu.Lock()
	k.block = false
	k.mu.Unlock()
	if _, _, err := c.Lookup(t.Context(), e.Orig); err != nil || *dials != 2 {
		t.Errorf("Lookup after the interrupted dump: %v (%d dials, want 2)", err, *dials)
	}
}

// script is a receiver that returns scripted datagrams and errors, then
// blocks until closed.
type script struct {
	mu     sync.Mutex
	steps  []any // []byte datagram or error
	closed chan struct{}
	once   sync.Once
}

func newScript(steps ...any) *script { return &script{steps: steps, closed: make(chan struct{})} }

func (s *script) recv(wait bool) ([]byte, error) {
	s.mu.Lock()
	if len(s.steps) == 0 && !wait {
		s.mu.Unlock()
		return nil, syscall.EAGAIN
	}
	if len(s.steps) > 0 {
		st := s.steps[0]
		s.steps = s.steps[1:]
		s.mu.Unlock()
		if err, ok := st.(error); ok {
			return nil, err
		}
		return st.([]byte), nil
	}
	s.mu.Unlock()
	<-s.closed
	return nil, os.ErrClosed
}

func (s *script) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// datagram packs event messages into one datagram as the kernel would.
func datagram(ms ...nlMsg) []byte {
	var b []byte
	for _, m := range ms {
		h := make([]byte, nlmsgHeaderLen)
		l := nlmsgHeaderLen + len(m.data)
		binary.NativeEndian.PutUint32(h[0:], uint32(l))
		binary.NativeEndian.PutUint16(h[4:], m.typ)
		binary.NativeEndian.PutUint16(h[6:], m.flags)
		b = append(b, h...)
		b = append(b, m.data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// TestWatcherOverrunInjected drives the read loop with an injected
// ENOBUFS between two events: the loss is counted and logged at once,
// reported after the events still queued (when the queue reads empty),
// and reading goes on.
func TestWatcherOverrunInjected(t *testing.T) {
	e1 := sampleEntry()
	e2 := sampleEntry()
	e2.ID, e2.Orig.SrcPort, e2.Reply.DstPort = 78, 40001, 40001
	destroy := func(e Entry) nlMsg { return flowMsg(t, msgDelete, 0, e) }
	newEv := flowMsg(t, msgNew, unix.NLM_F_CREATE|unix.NLM_F_EXCL, e2)
	garbage := nlMsg{typ: nfnlSubsysCTNetlink<<8 | uint16(msgNew), data: []byte{2, 0, 0, 0, 4, 0}}
	rx := newScript(
		datagram(destroy(e1)),
		syscall.ENOBUFS,
		datagram(garbage, newEv),
		datagram(destroy(e2)),
		syscall.EAGAIN, // queue drained: EventLost
		syscall.EINTR,
		datagram(destroy(e1)),
	)
	var logs syncBuffer
	c, _ := fakeConn(&fakeKernel{}, slog.New(slog.NewTextHandler(&logs, nil)))
	var got []string
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	w, err := c.startWatcher(ctx, rx, 4096, func(ev Event) {
		got = append(got, fmt.Sprintf("%s %d", ev.Type, ev.Entry.ID))
		if len(got) == 5 {
			close(done)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("events so far: %v", got)
	}
	cancel()
	if err := w.Wait(); err != nil {
		t.Errorf("Wait after cancel: %v", err)
	}
	want := "[DESTROY 77 NEW 78 DESTROY 78 LOST 0 DESTROY 77]"
	if fmt.Sprint(got) != want {
		t.Errorf("events %v, want %s", got, want)
	}
	st := c.Stats()
	if w.Overruns() != 1 || st.Overruns != 1 || st.Events != 4 || st.DecodeErrors != 1 {
		t.Errorf("watcher overruns %d, stats %+v", w.Overruns(), st)
	}
	if !strings.Contains(logs.String(), "conntrack events lost") || !strings.Contains(logs.String(), "overruns=1") {
		t.Errorf("log:\n%s", logs.String())
	}
}

func TestWatcherFatalError(t *testing.T) {
	c, _ := fakeConn(&fakeKernel{}, slog.New(slog.DiscardHandler))
	w, err := c.startWatcher(t.Context(), newScript(syscall.EBADF), 0, func(Event) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Wait = %v, want EBADF", err)
	}
	// Closing the Conn stops a running watcher with ErrClosed.
	w2, err := c.startWatcher(t.Context(), newScript(), 0, func(Event) {})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := w2.Wait(); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close = %v, want ErrClosed", err)
	}
	if _, err := c.startWatcher(t.Context(), newScript(), 0, func(Event) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("watch on a closed Conn: %v", err)
	}
}

func TestExpirer(t *testing.T) {
	sctp := sampleEntry()
	sctp.Orig.Proto, sctp.Reply.Proto = protoSCTP, protoSCTP
	var expired []Tuple
	resyncs := 0
	fn := Expirer(func(tu Tuple) { expired = append(expired, tu) }, func() { resyncs++ })
	fn(Event{Type: EventNew, Entry: sampleEntry()})
	fn(Event{Type: EventUpdate, Entry: sampleEntry()})
	fn(Event{Type: EventDestroy, Entry: sampleEntry()})
	fn(Event{Type: EventLost})
	fn(Event{Type: EventDestroy, Entry: sctp})
	want := []Tuple{sampleEntry().Orig, Canonical(sctp.Orig)}
	if fmt.Sprint(expired) != fmt.Sprint(want) || resyncs != 1 {
		t.Errorf("expired %v resyncs %d", expired, resyncs)
	}
	if want[1].SrcPort != 0 {
		t.Error("SCTP ports not cleared for the userspace table")
	}
	Expirer(func(Tuple) {}, nil)(Event{Type: EventLost}) // nil resync is allowed
}
