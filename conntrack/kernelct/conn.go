package kernelct

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/packet"
)

// ErrNotFound is returned (wrapped) when the kernel has no entry for a
// tuple: it never had one, or the entry expired or was deleted.
var ErrNotFound = errors.New("no such kernel conntrack entry")

// ErrClosed is returned by the methods of a closed Conn.
var ErrClosed = errors.New("kernelct: connection closed")

// Options configure Open.
type Options struct {
	// Namespace is the path of the network namespace whose conntrack
	// table the Conn works on (/run/netns/NAME, /proc/PID/ns/net). Empty
	// means the namespace of the OS thread that calls Open: the process's
	// own, or the one a caller inside netns.Namespace.Do entered. Either
	// way the Conn keeps the namespace open and opens every later socket
	// (Watch, redials) in it, from whatever goroutine.
	Namespace string
	// Logger receives event overruns and mark-mask probing results;
	// nil means slog.Default().
	Logger *slog.Logger
	// MarkMask says how SetMark applies a partial mask; the zero value
	// probes the kernel.
	MarkMask MarkMaskMode
}

// MarkMaskMode says how SetMark applies a partial mask (see SetMark).
type MarkMaskMode uint8

const (
	// MarkMaskProbe sends CTA_MARK_MASK once the kernel has been seen to
	// honour it, and reads the mark around each masked update until then.
	MarkMaskProbe MarkMaskMode = iota
	// MarkMaskKernel always sends CTA_MARK_MASK: one atomic request per
	// update, for kernels known to support it (Linux 6.x does). A kernel
	// that ignores the mask would clear the bits outside it.
	MarkMaskKernel
	// MarkMaskReadModifyWrite always reads the mark, merges and writes it
	// back: racy (see SetMark), for kernels known to ignore the mask.
	MarkMaskReadModifyWrite
)

// requester is the request side of a netlink socket; *nlSocket
// implements it, tests substitute a fake kernel.
type requester interface {
	Execute(req []byte, kind replyKind, fn func(*nlMsg) error) error
	SetDeadline(time.Time) error
	Close() error
}

// Mark-mask support as learned by probing (see SetMark).
const (
	maskUnknown int32 = iota
	maskSupported
	maskUnsupported
)

// Conn is a ctnetlink connection to one network namespace's conntrack
// table. It is safe for concurrent use; requests are serialised on one
// socket (each is a single round trip to the kernel).
type Conn struct {
	log *slog.Logger
	ns  *nsHandle // nil for test Conns built on a fake requester

	mu     sync.Mutex // guards rq, closed, watchers and serialises requests
	rq     requester  // nil after a request left the socket unusable
	dial   func() (requester, error)
	closed bool

	watchers map[*Watcher]struct{}

	markMask atomic.Int32

	stats struct {
		requests, events, overruns, decodeErrors, markRMW atomic.Uint64
	}
}

// Stats are a Conn's counters since Open. They only grow.
type Stats struct {
	// Requests is the number of ctnetlink requests sent.
	Requests uint64
	// Events is the number of events delivered by the Conn's watchers.
	Events uint64
	// Overruns counts ENOBUFS on event sockets: each one means the kernel
	// dropped events because the socket's receive buffer was full. The
	// watcher's callback learns of it through an EventLost once the
	// socket has been read empty.
	Overruns uint64
	// DecodeErrors counts kernel messages (dump entries or events) that
	// could not be decoded and were skipped.
	DecodeErrors uint64
	// MarkRMW counts SetMark calls done as read-modify-write because the
	// kernel ignores CTA_MARK_MASK.
	MarkRMW uint64
}

// Open opens a ctnetlink connection to the conntrack table of
// opts.Namespace, or of the calling thread's namespace. It needs
// CAP_NET_ADMIN in that namespace (and CAP_SYS_ADMIN to enter a namespace
// other than the caller's).
func Open(ctx context.Context, opts Options) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var (
		ns  *nsHandle
		err error
	)
	if opts.Namespace == "" {
		ns, err = threadNS()
	} else {
		ns, err = openNS(opts.Namespace)
	}
	if err != nil {
		return nil, err
	}
	c := newConn(opts.Logger, func() (requester, error) { return newNLSocket(ns) })
	c.ns = ns
	switch opts.MarkMask {
	case MarkMaskKernel:
		c.markMask.Store(maskSupported)
	case MarkMaskReadModifyWrite:
		c.markMask.Store(maskUnsupported)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rq, err = c.dial(); err != nil {
		ns.close()
		return nil, err
	}
	return c, nil
}

// OpenInNamespace is Open for the namespace at nsPath
// (netns.Namespace.Path(), /proc/PID/ns/net).
func OpenInNamespace(ctx context.Context, nsPath string) (*Conn, error) {
	return Open(ctx, Options{Namespace: nsPath})
}

func newConn(log *slog.Logger, dial func() (requester, error)) *Conn {
	if log == nil {
		log = slog.Default()
	}
	return &Conn{log: log, dial: dial, watchers: map[*Watcher]struct{}{}}
}

// Close closes the connection and the sockets of its watchers (their Wait
// then returns ErrClosed).
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	var err error
	if c.rq != nil {
		err = c.rq.Close()
		c.rq = nil
	}
	ws := make([]*Watcher, 0, len(c.watchers))
	for w := range c.watchers {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	for _, w := range ws {
		w.stop(ErrClosed)
		<-w.done
	}
	if c.ns != nil {
		err = errors.Join(err, c.ns.close())
	}
	return err
}

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	return Stats{
		Requests:     c.stats.requests.Load(),
		Events:       c.stats.events.Load(),
		Overruns:     c.stats.overruns.Load(),
		DecodeErrors: c.stats.decodeErrors.Load(),
		MarkRMW:      c.stats.markRMW.Load(),
	}
}

// aLongTimeAgo is a deadline in the past: setting it makes a blocked
// socket call return at once.
var aLongTimeAgo = time.Unix(1, 0)

// execute sends one request and passes the data messages of the reply
// to fn. The context's deadline and cancellation interrupt the round
// trip; a late reply is skipped by the next request (the socket matches
// replies by sequence number). A socket that failed otherwise is replaced
// on the next call.
func (c *Conn) execute(ctx context.Context, req []byte, kind replyKind, fn func(*nlMsg) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.rq == nil {
		rq, err := c.dial()
		if err != nil {
			return err
		}
		c.rq = rq
	}
	rq := c.rq
	dl, _ := ctx.Deadline() // zero: no deadline
	if err := rq.SetDeadline(dl); err != nil {
		return fmt.Errorf("kernelct: set deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { rq.SetDeadline(aLongTimeAgo) })
	c.stats.requests.Add(1)
	err := rq.Execute(req, kind, fn)
	fired := !stop()
	var kerr kernelError
	switch {
	case err == nil, errors.As(err, &kerr), errors.Is(err, errDecode):
		// A complete answer, the kernel's error, or a message we could
		// not decode: the socket is in step with the kernel.
		return err
	case kind != replyDump && (fired || errors.Is(err, os.ErrDeadlineExceeded)):
		// The late answer will be skipped by sequence number. (An
		// interrupted dump is not: the kernel would refuse the next dump
		// on this socket with EBUSY until the old one was read out, so
		// that socket is replaced below.)
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return err
	}
	rq.Close()
	c.rq = nil
	if fired {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
	}
	return err
}

// List returns every entry of the kernel's table (IPv4 and IPv6), decoded
// as the dump arrives. Entries that cannot be decoded are skipped and
// counted in Stats.DecodeErrors.
func (c *Conn) List(ctx context.Context) ([]Entry, error) {
	req := finish(requestHeader(msgGet, flagRequest|flagDump, netfilter.ProtoUnspec))
	var out []Entry
	err := c.execute(ctx, req, replyDump, func(m *nlMsg) error {
		e, _, err := decodeFlow(m)
		if err != nil {
			c.stats.decodeErrors.Add(1)
			c.log.Warn("kernelct: skipping undecodable conntrack entry", "err", err)
			return nil
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernelct: dump conntrack table: %w", err)
	}
	return out, nil
}

// Lookup returns the kernel's entry one of whose tuples is t, and t's
// direction in it. The error wraps ErrNotFound when there is none.
func (c *Conn) Lookup(ctx context.Context, t Tuple) (Entry, conntrack.Dir, error) {
	req, err := tupleRequest(msgGet, flagRequest, &t, nil, nil)
	if err != nil {
		return Entry{}, 0, err
	}
	var e Entry
	err = c.execute(ctx, req, replyOne, func(m *nlMsg) error {
		var err error
		if e, _, err = decodeFlow(m); err != nil {
			c.stats.decodeErrors.Add(1)
		}
		return err
	})
	if err != nil {
		return Entry{}, 0, opError("get", t, err)
	}
	dir, ok := e.Dir(t)
	if !ok {
		return Entry{}, 0, fmt.Errorf("kernelct: get %s: kernel returned a different connection: %s", tupleString(t), e.String())
	}
	return e, dir, nil
}

// LookupPacket looks up the entry of the packet in v (see TupleOf), in
// either direction.
func (c *Conn) LookupPacket(ctx context.Context, v *packet.View) (Entry, conntrack.Dir, error) {
	t, err := TupleOf(v)
	if err != nil {
		return Entry{}, 0, err
	}
	return c.Lookup(ctx, t)
}

// Delete removes the kernel's entry one of whose tuples is t. The kernel
// sends a destroy event for it. The error wraps ErrNotFound when there is
// no such entry.
func (c *Conn) Delete(ctx context.Context, t Tuple) error {
	req, err := tupleRequest(msgDelete, flagRequest|flagAck, &t, nil, nil)
	if err != nil {
		return err
	}
	if err := c.execute(ctx, req, replyAck, nil); err != nil {
		return opError("delete", t, err)
	}
	return nil
}

// Flush deletes every entry of the namespace's table (conntrack -F),
// with a destroy event for each.
func (c *Conn) Flush(ctx context.Context) error {
	req := finish(requestHeader(msgDelete, flagRequest|flagAck, netfilter.ProtoUnspec))
	if err := c.execute(ctx, req, replyAck, nil); err != nil {
		return fmt.Errorf("kernelct: flush: %w", err)
	}
	return nil
}

// SetMark sets the bits of the connection mark selected by mask to those
// of value, leaving the others, on the kernel's entry one of whose tuples
// is t: mark = mark&^mask | value&mask, CONNMARK --set-mark value/mask.
// This is how the live daemon hands a settled flow back to the kernel
// fast path (a rule matching -m connmark accepts its later packets).
//
// A full mask (0xffffffff) is a plain CTA_MARK write, atomic on every
// kernel. A partial mask is sent as CTA_MARK with CTA_MARK_MASK, which the
// kernel applies atomically under its own rule mark = (mark & ^mask) ^
// value. Kernels that predate mask support ignore CTA_MARK_MASK and would
// replace the whole mark. With Options.MarkMask = MarkMaskProbe (the
// default) the Conn finds out: while it does not know, it reads the mark
// before each masked update (a mark without bits outside the mask comes
// out right either way), and on the first one that can tell the two
// behaviours apart (bits outside the mask set) it reads the mark again,
// repairs the entry if the kernel replaced it, and remembers the answer.
// A kernel that honours the mask then gets one atomic request per update;
// one that ignores it gets read-modify-write: a Lookup, then a full
// write. That fallback races with the kernel: a CONNMARK rule that
// changes bits outside the mask between the read and the write is undone.
// Stats.MarkRMW counts such calls. MarkMaskKernel and
// MarkMaskReadModifyWrite skip the probing.
func (c *Conn) SetMark(ctx context.Context, t Tuple, value, mask uint32) error {
	switch {
	case mask == 0:
		_, _, err := c.Lookup(ctx, t) // nothing to change; report a missing entry
		return err
	case mask == ^uint32(0):
		return c.writeMark(ctx, t, value, nil)
	}
	switch c.markMask.Load() {
	case maskSupported:
		return c.writeMark(ctx, t, value&mask, &mask)
	case maskUnsupported:
		c.stats.markRMW.Add(1)
		old, _, err := c.Lookup(ctx, t)
		if err != nil {
			return err
		}
		want := old.Mark&^mask | value&mask
		if want == old.Mark {
			return nil
		}
		return c.writeMark(ctx, t, want, nil)
	}
	// Not known yet: probe with this call.
	old, _, err := c.Lookup(ctx, t)
	if err != nil {
		return err
	}
	if err := c.writeMark(ctx, t, value&mask, &mask); err != nil {
		return err
	}
	if old.Mark&^mask == 0 {
		return nil // either semantics gives the same mark: cannot tell yet
	}
	now, _, err := c.Lookup(ctx, t)
	if err != nil {
		return err
	}
	want := old.Mark&^mask | value&mask
	switch now.Mark {
	case want:
		c.markMask.Store(maskSupported)
	case value & mask:
		c.markMask.Store(maskUnsupported)
		c.stats.markRMW.Add(1)
		c.log.Warn("kernelct: kernel ignores CTA_MARK_MASK; masked mark updates fall back to read-modify-write")
		return c.writeMark(ctx, t, want, nil)
	}
	// Anything else: someone changed the mark meanwhile; probe again later.
	return nil
}

func (c *Conn) writeMark(ctx context.Context, t Tuple, mark uint32, mask *uint32) error {
	req, err := tupleRequest(msgNew, flagRequest|flagAck, &t, &mark, mask)
	if err != nil {
		return err
	}
	if err := c.execute(ctx, req, replyAck, nil); err != nil {
		return opError("set mark on", t, err)
	}
	return nil
}

// opError wraps a request error, mapping ENOENT to ErrNotFound.
func opError(op string, t Tuple, err error) error {
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("kernelct: %s %s: %w", op, tupleString(t), ErrNotFound)
	}
	return fmt.Errorf("kernelct: %s %s: %w", op, tupleString(t), err)
}
