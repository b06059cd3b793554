package kernelct

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	ct "github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// EventType says what happened to a kernel entry.
type EventType uint8

const (
	// EventNew: the kernel confirmed a new connection.
	EventNew EventType = iota + 1
	// EventUpdate: an entry's state, status, mark or labels changed.
	EventUpdate
	// EventDestroy: the entry is gone (expired, deleted, flushed, or
	// evicted by early drop). The Entry carries its final counters.
	EventDestroy
	// EventLost: the kernel dropped events for this watcher because its
	// socket buffer was full (ENOBUFS). Which ones is unknown: the
	// consumer must resynchronise, e.g. by listing the kernel table and
	// expiring what is no longer there. It comes after the events that
	// were still queued, once the kernel delivers events again, so a
	// re-list started on it sees every change the lost events reported.
	// The Entry is empty.
	EventLost
)

var eventNames = [...]string{"", "NEW", "UPDATE", "DESTROY", "LOST"}

func (t EventType) String() string {
	if int(t) < len(eventNames) && t != 0 {
		return eventNames[t]
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one conntrack event.
type Event struct {
	Type  EventType
	Entry Entry
}

// DefaultReadBuffer is the event socket's receive buffer size unless
// WatchOptions.ReadBuffer says otherwise: room for tens of thousands of
// events while the consumer is busy.
const DefaultReadBuffer = 16 << 20

// WatchOptions configure Watch.
type WatchOptions struct {
	// Types are the event types to subscribe to (EventNew, EventUpdate,
	// EventDestroy); empty means EventDestroy only. EventLost is always
	// delivered.
	Types []EventType
	// ReadBuffer is the socket receive buffer size in bytes: 0 means
	// DefaultReadBuffer, a negative value keeps the system default
	// (net.core.rmem_default). It is set with SO_RCVBUFFORCE, which lifts
	// the net.core.rmem_max cap for a process with CAP_NET_ADMIN, and
	// with SO_RCVBUF (capped) otherwise. The kernel doubles the value for
	// its bookkeeping and enforces a small minimum.
	ReadBuffer int
	// ReliableDestroy asks the kernel not to drop destroy events: with
	// NETLINK_BROADCAST_ERROR set, a destroy event that does not fit into
	// the socket buffer keeps the dying entry on the kernel's side and is
	// redelivered later (how conntrackd follows the table reliably). New
	// and update events can still be lost (and are reported as
	// EventLost). A watcher that stops reading makes the kernel hold
	// dying entries until it reads again or closes.
	ReliableDestroy bool
}

// receiver is the event side of a netlink socket; *nlSocket implements
// it, tests substitute one that injects errors. recv returns one datagram,
// valid until the next call, and the socket's errors unwrapped; with wait
// false an empty queue is unix.EAGAIN.
type receiver interface {
	recv(wait bool) ([]byte, error)
	Close() error
}

// Watcher follows a Conn's kernel table through a multicast subscription
// on a socket of its own. It delivers events to one callback from one
// goroutine, in the order the kernel sent them.
type Watcher struct {
	c    *Conn
	rx   receiver
	fn   func(Event)
	rbuf int

	overruns atomic.Uint64

	mu      sync.Mutex
	stopped bool  // the socket was closed
	stopErr error // why it was closed from outside (nil: context ended)

	done chan struct{}
	err  error // valid after done
}

// Watch subscribes to the kernel's conntrack events and calls fn for each
// one until ctx is done or the Conn is closed. It returns once the
// subscription is in place: every entry the kernel creates or destroys
// after that is reported. (With net.netfilter.nf_conntrack_events=2, the
// default since Linux 6.0, the kernel only attaches event state to
// entries created while some listener exists: entries that were already
// there when the first watcher subscribed produce no destroy event. Open
// the watcher before the traffic, or set the sysctl to 1.)
//
// fn runs on the watcher's goroutine; while it runs, no socket reads
// happen, so a slow fn makes the socket buffer fill. When it overflows
// the kernel drops events and the next read fails with ENOBUFS: the
// watcher counts it (Watcher.Overruns, Stats.Overruns) and logs it, reads
// on until the socket's queue is empty (the kernel drops every event
// until then), and calls fn with EventLost. Events are never lost
// silently, and an EventLost covers every event dropped before it.
func (c *Conn) Watch(ctx context.Context, opts WatchOptions, fn func(Event)) (*Watcher, error) {
	if c.ns == nil {
		return nil, errors.New("kernelct: Watch needs a Conn from Open")
	}
	groups, err := eventGroups(opts.Types)
	if err != nil {
		return nil, err
	}
	// Under the lock: Close must not close the namespace descriptor while
	// a socket is being created in it.
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	s, err := newNLSocket(c.ns)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	rbuf, err := setupEventSocket(s, groups, opts)
	if err != nil {
		s.Close()
		return nil, err
	}
	return c.startWatcher(ctx, s, rbuf, fn)
}

// eventGroups maps event types to NFNLGRP_CONNTRACK_* groups.
func eventGroups(types []EventType) ([]netfilter.NetlinkGroup, error) {
	if len(types) == 0 {
		return []netfilter.NetlinkGroup{netfilter.GroupCTDestroy}, nil
	}
	var gs []netfilter.NetlinkGroup
	for _, t := range types {
		switch t {
		case EventNew:
			gs = append(gs, netfilter.GroupCTNew)
		case EventUpdate:
			gs = append(gs, netfilter.GroupCTUpdate)
		case EventDestroy:
			gs = append(gs, netfilter.GroupCTDestroy)
		case EventLost: // always delivered
		default:
			return nil, fmt.Errorf("kernelct: cannot subscribe to %s events", t)
		}
	}
	return gs, nil
}

// setupEventSocket sizes the receive buffer, sets the delivery options and
// joins the groups. It returns the effective buffer size.
func setupEventSocket(s *nlSocket, groups []netfilter.NetlinkGroup, opts WatchOptions) (int, error) {
	size := opts.ReadBuffer
	if size == 0 {
		size = DefaultReadBuffer
	}
	var rbuf int
	err := s.control(func(fd int) error {
		if size > 0 {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size); err != nil {
				// Not privileged: the unforced size, capped at rmem_max.
				if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size); err != nil {
					return fmt.Errorf("set receive buffer to %d bytes: %w", size, err)
				}
			}
		}
		if opts.ReliableDestroy {
			if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_BROADCAST_ERROR, 1); err != nil {
				return fmt.Errorf("set NETLINK_BROADCAST_ERROR: %w", err)
			}
		}
		for _, g := range groups {
			if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(g)); err != nil {
				return fmt.Errorf("join conntrack event group %d: %w", g, err)
			}
		}
		var err error
		rbuf, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("kernelct: event socket: %w", err)
	}
	return rbuf, nil
}

// startWatcher runs the read loop on rx until ctx ends or the Conn closes.
func (c *Conn) startWatcher(ctx context.Context, rx receiver, rbuf int, fn func(Event)) (*Watcher, error) {
	w := &Watcher{c: c, rx: rx, fn: fn, rbuf: rbuf, done: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		rx.Close()
		return nil, ErrClosed
	}
	c.watchers[w] = struct{}{}
	c.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { w.stop(nil) })
	go func() {
		defer close(w.done)
		defer stop()
		err := w.run()
		w.stop(nil) // close the socket if run ended by itself
		c.mu.Lock()
		delete(c.watchers, w)
		c.mu.Unlock()
		if stopped, why := w.stopState(); err == nil && stopped {
			err = why
		}
		w.err = err
	}()
	return w, nil
}

// stop closes the socket, which interrupts a blocked read. err is what
// Wait reports (nil for the context ending). Only the first call counts.
func (w *Watcher) stop(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.stopped, w.stopErr = true, err
	w.rx.Close()
}

func (w *Watcher) stopState() (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopped, w.stopErr
}

// run is the read loop.
//
// After an ENOBUFS the kernel goes on dropping events for the socket
// until its queue has been read empty (netlink keeps the socket
// "congested" till then, and reports no second ENOBUFS for it). So the
// loop reads on without blocking, delivering the events still queued,
// and reports EventLost only when a read finds the queue empty: from then
// on every event is delivered again, and a consumer that re-lists the
// kernel table on EventLost misses nothing.
func (w *Watcher) run() error {
	lost := false
	for {
		b, err := w.rx.recv(!lost)
		if err != nil {
			if stopped, _ := w.stopState(); stopped {
				return nil // closed from outside: the read failed for that
			}
			switch {
			case errors.Is(err, unix.ENOBUFS):
				w.overrun()
				lost = true
				continue
			case lost && errors.Is(err, unix.EAGAIN):
				lost = false
				w.fn(Event{Type: EventLost})
				continue
			case errors.Is(err, unix.EINTR):
				continue
			}
			return fmt.Errorf("kernelct: receive conntrack events: %w", err)
		}
		for len(b) > 0 {
			var m nlMsg
			if m, b, err = nextMsg(b); err != nil {
				w.c.stats.decodeErrors.Add(1)
				w.c.log.Warn("kernelct: skipping malformed netlink datagram", "err", err)
				break
			}
			if m.typ < unix.NLMSG_MIN_TYPE { // NOOP, ERROR, DONE, OVERRUN
				continue
			}
			e, kev, err := decodeFlow(&m)
			if err != nil {
				w.c.stats.decodeErrors.Add(1)
				w.c.log.Warn("kernelct: skipping undecodable conntrack event", "err", err)
				continue
			}
			var typ EventType
			switch kev.Type {
			case ct.EventNew:
				typ = EventNew
			case ct.EventUpdate:
				typ = EventUpdate
			case ct.EventDestroy:
				typ = EventDestroy
			default:
				continue
			}
			w.c.stats.events.Add(1)
			w.fn(Event{Type: typ, Entry: e})
		}
	}
}

// overrun counts and logs an ENOBUFS: the kernel dropped events for this
// socket.
func (w *Watcher) overrun() {
	n := w.overruns.Add(1)
	w.c.stats.overruns.Add(1)
	w.c.log.Warn("kernelct: conntrack events lost (socket receive buffer overrun); consumer must resync",
		"overruns", n, "rcvbuf", w.rbuf)
}

// Wait blocks until the watcher has stopped and returns why: nil when its
// context ended, ErrClosed when the Conn was closed, or the read error
// that ended it.
func (w *Watcher) Wait() error {
	<-w.done
	return w.err
}

// Done is closed when the watcher has stopped.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Overruns returns how many times this watcher's socket overflowed.
func (w *Watcher) Overruns() uint64 { return w.overruns.Load() }

// ReadBuffer returns the socket's receive buffer size as the kernel
// reports it (SO_RCVBUF, twice the size asked for).
func (w *Watcher) ReadBuffer() int { return w.rbuf }

// Expirer returns an event callback for Watch that keeps a userspace
// table in step with the kernel's: for every destroyed entry it calls
// expire with the entry's original tuple in the userspace table's form
// (Canonical), and for every EventLost it calls resync, if not nil, so
// the caller can re-list the kernel table. Other events are ignored. With
// a conntrack.Table:
//
//	conn.Watch(ctx, kernelct.WatchOptions{}, kernelct.Expirer(
//		func(t kernelct.Tuple) { table.Delete(t) }, relist))
func Expirer(expire func(Tuple), resync func()) func(Event) {
	return func(ev Event) {
		switch ev.Type {
		case EventDestroy:
			expire(Canonical(ev.Entry.Orig))
		case EventLost:
			if resync != nil {
				resync()
			}
		}
	}
}
