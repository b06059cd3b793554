package kernelct

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/internal/kerneltest"
	"github.com/qtables/qtables/internal/netns"
	"github.com/qtables/qtables/packet"
)

// The kernel tests build two namespaces joined by a veth pair: "cli"
// (no firewall) and "srv", where an iptables rule using -m conntrack makes
// the kernel track every flow. All traffic stays between the two.

const nsPrefix = "qtkct"

var (
	cliIP = netip.MustParseAddr("100.64.77.1")
	srvIP = netip.MustParseAddr("100.64.77.2")
)

type lab struct {
	srv, cli *netns.Namespace
}

func newLab(t testing.TB) *lab {
	t.Helper()
	kerneltest.Require(t, "ip", "iptables")
	if _, err := netns.CleanStale(nsPrefix); err != nil {
		t.Logf("clean stale namespaces: %v", err)
	}
	mk := func(role string) *netns.Namespace {
		n, err := netns.New(nsPrefix, role)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	l := &lab{srv: mk("srv"), cli: mk("cli")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(netns.AddVeth(l.cli, "c0", l.srv, "s0"))
	must(l.cli.LinkUp("c0"))
	must(l.srv.LinkUp("s0"))
	must(l.cli.AddAddr("c0", netip.PrefixFrom(cliIP, 24)))
	must(l.srv.AddAddr("s0", netip.PrefixFrom(srvIP, 24)))
	if _, err := l.srv.Exec(nil, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT"); err != nil {
		t.Fatal(err)
	}
	// Per-namespace: count packets and bytes in every new entry.
	must(l.srv.SetSysctl("net.netfilter.nf_conntrack_acct", "1"))
	return l
}

// open opens a bridge Conn on the server namespace's table.
func (l *lab) open(t testing.TB, log *slog.Logger) *Conn {
	t.Helper()
	c, err := Open(t.Context(), Options{Namespace: l.srv.Path(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tcp opens a TCP connection from cli to srv and exchanges one message
// each way, so the kernel's entry is ESTABLISHED and ASSURED.
func (l *lab) tcp(t testing.TB) (client, server net.Conn) {
	t.Helper()
	var ln net.Listener
	if err := l.srv.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(srvIP, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := l.cli.Do(func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		client, err = d.Dial("tcp4", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	exchange(t, client, server)
	return client, server
}

func exchange(t testing.TB, a, b net.Conn) {
	t.Helper()
	buf := make([]byte, 16)
	for _, p := range [][2]net.Conn{{a, b}, {b, a}} {
		p[1].SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := p[0].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := p[1].Read(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// udp sends one datagram with a one-byte payload from cli to a socket on
// srv and, if reply, one back. It returns both sockets.
func (l *lab) udp(t testing.TB, reply bool) (client, server *net.UDPConn) {
	t.Helper()
	if err := l.srv.Do(func() (err error) {
		server, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(srvIP, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	if err := l.cli.Do(func() (err error) {
		client, err = net.DialUDP("udp4", nil, server.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if _, err := client.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16)
	_, from, err := server.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if reply {
		if _, err := server.WriteToUDPAddrPort([]byte("r"), from); err != nil {
			t.Fatal(err)
		}
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := client.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	return client, server
}

// flowTuple returns the original tuple of a connection from its client
// socket's local and remote addresses.
func flowTuple(proto uint8, c net.Conn) Tuple {
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())
	return conntrack.TupleFrom(local.Addr(), remote.Addr(), proto, local.Port(), remote.Port())
}

func inverse(t *testing.T, tu Tuple) Tuple {
	t.Helper()
	inv, ok := tu.Invert()
	if !ok {
		t.Fatalf("tuple %s has no inverse", tupleString(tu))
	}
	return inv
}

// collector records a watcher's events for the test to wait on.
type collector struct {
	mu     sync.Mutex
	events []Event
	notify chan struct{}
}

func newCollector() *collector { return &collector{notify: make(chan struct{}, 1)} }

func (c *collector) add(ev Event) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// wait returns the first recorded event satisfying pred, waiting up to d
// for it.
func (c *collector) wait(t *testing.T, d time.Duration, what string, pred func(Event) bool) Event {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for _, ev := range c.events {
			if pred(ev) {
				c.mu.Unlock()
				return ev
			}
		}
		n := len(c.events)
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-deadline.C:
			t.Fatalf("no %s event within %v (%d events seen)", what, d, n)
		}
	}
}

func (c *collector) count(pred func(Event) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ev := range c.events {
		if pred(ev) {
			n++
		}
	}
	return n
}

func isEvent(typ EventType, orig Tuple) func(Event) bool {
	return func(ev Event) bool { return ev.Type == typ && ev.Entry.Orig == orig }
}

// poll calls f until it returns nil or d passes, and fails with f's last
// error.
func poll(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func find(es []Entry, orig Tuple) (Entry, bool) {
	for _, e := range es {
		if e.Orig == orig {
			return e, true
		}
	}
	return Entry{}, false
}

func TestKernelBridge(t *testing.T) {
	l := newLab(t)
	ctx := t.Context()
	kc := l.open(t, nil)

	events := newCollector()
	w, err := kc.Watch(ctx, WatchOptions{Types: []EventType{EventNew, EventDestroy}}, events.add)
	if err != nil {
		t.Fatal(err)
	}
	if w.ReadBuffer() < DefaultReadBuffer {
		t.Errorf("event socket buffer %d bytes, want at least %d (SO_RCVBUFFORCE as root)", w.ReadBuffer(), DefaultReadBuffer)
	}

	tcpClient, tcpServer := l.tcp(t)
	tcpOrig := flowTuple(packet.ProtoTCP, tcpClient)
	tcpReply := inverse(t, tcpOrig)
	udpClient, _ := l.udp(t, true)
	udpOrig := flowTuple(packet.ProtoUDP, udpClient)
	udpReply := inverse(t, udpOrig)

	// The watcher subscribed before the traffic: both flows are announced.
	events.wait(t, 10*time.Second, "TCP new", isEvent(EventNew, tcpOrig))
	events.wait(t, 10*time.Second, "UDP new", isEvent(EventNew, udpOrig))

	var tcpEntry Entry
	t.Run("List", func(t *testing.T) {
		es, err := kc.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e, ok := find(es, tcpOrig)
		if !ok {
			t.Fatalf("TCP flow %s not in %d listed entries", tupleString(tcpOrig), len(es))
		}
		tcpEntry = e
		if e.Reply != tcpReply || e.Proto() != packet.ProtoTCP {
			t.Errorf("TCP entry %s: reply tuple or proto wrong", e.String())
		}
		if e.TCPState != conntrack.TCPEstablished {
			t.Errorf("TCP state %s, want ESTABLISHED", e.TCPState)
		}
		want := conntrack.StatusSeenReply | conntrack.StatusAssured | conntrack.StatusConfirmed
		if e.Status&want != want {
			t.Errorf("TCP status %#x, want %#x set", uint32(e.Status), uint32(want))
		}
		// nf_conntrack_tcp_timeout_established is 5 days.
		if e.Timeout <= 0 || e.Timeout > 5*24*time.Hour {
			t.Errorf("TCP timeout %v", e.Timeout)
		}
		// SYN, ACK, data, ACK of the reply at least one way; SYN/ACK, data
		// the other. Every IPv4 TCP packet is at least 40 bytes.
		if !e.HasCounters || e.Packets[0] < 3 || e.Packets[1] < 2 || e.Bytes[0] < 40*e.Packets[0] || e.Bytes[1] < 40*e.Packets[1] {
			t.Errorf("TCP counters %v packets %v bytes (accounting %v)", e.Packets, e.Bytes, e.HasCounters)
		}

		u, ok := find(es, udpOrig)
		if !ok {
			t.Fatalf("UDP flow %s not listed", tupleString(udpOrig))
		}
		if u.Reply != udpReply || u.Status&conntrack.StatusSeenReply == 0 || u.TCPState != conntrack.TCPNone {
			t.Errorf("UDP entry %s", u.String())
		}
		// One datagram each way, one payload byte: the kernel counts the
		// IP total length, 20 + 8 + 1.
		if u.Packets != [2]uint64{1, 1} || u.Bytes != [2]uint64{29, 29} {
			t.Errorf("UDP counters %v packets %v bytes, want [1 1] [29 29]", u.Packets, u.Bytes)
		}
		if u.Timeout <= 0 || u.Timeout > 30*time.Second {
			t.Errorf("UDP timeout %v, want at most the 30 s of a replied flow", u.Timeout)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("Lookup", func(t *testing.T) {
		for _, c := range []struct {
			tu  Tuple
			dir conntrack.Dir
		}{{tcpOrig, conntrack.DirOriginal}, {tcpReply, conntrack.DirReply}} {
			e, dir, err := kc.Lookup(ctx, c.tu)
			if err != nil {
				t.Fatal(err)
			}
			if e.ID != tcpEntry.ID || e.Orig != tcpOrig || dir != c.dir {
				t.Errorf("Lookup(%s) = id %d dir %s, want id %d dir %s", tupleString(c.tu), e.ID, dir, tcpEntry.ID, c.dir)
			}
		}
		// From packets in either direction, as the live daemon sees them.
		toSrv := view(t, ipv4(cliIP, srvIP, packet.ProtoTCP, tcpHdr(tcpOrig.SrcPort, tcpOrig.DstPort, packet.TCPAck)))
		toCli := view(t, ipv4(srvIP, cliIP, packet.ProtoTCP, tcpHdr(tcpOrig.DstPort, tcpOrig.SrcPort, packet.TCPAck)))
		for i, v := range []*packet.View{toSrv, toCli} {
			e, dir, err := kc.LookupPacket(ctx, v)
			if err != nil {
				t.Fatal(err)
			}
			if e.ID != tcpEntry.ID || dir != conntrack.Dir(i) {
				t.Errorf("LookupPacket #%d = id %d dir %s", i, e.ID, dir)
			}
		}
		missing := tcpOrig
		missing.SrcPort++
		if _, _, err := kc.Lookup(ctx, missing); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup of an unknown tuple: %v, want ErrNotFound", err)
		}
	})

	t.Run("SetMark", func(t *testing.T) {
		mark := func(c *Conn) uint32 {
			t.Helper()
			e, _, err := c.Lookup(ctx, tcpOrig)
			if err != nil {
				t.Fatal(err)
			}
			return e.Mark
		}
		steps := []struct {
			value, mask, want uint32
		}{
			{0x12, 0xffffffff, 0x12},
			{0xab00, 0xff00, 0xab12},     // bits outside the mask survive
			{0xffff0000, 0, 0xab12},      // empty mask: no change
			{0x0000ff34, 0x00ff, 0xab34}, // value bits outside the mask ignored
		}
		for _, s := range steps {
			// From the reply direction too: the kernel finds the entry
			// by either tuple.
			if err := kc.SetMark(ctx, tcpReply, s.value, s.mask); err != nil {
				t.Fatal(err)
			}
			if got := mark(kc); got != s.want {
				t.Fatalf("after SetMark(%#x/%#x) mark = %#x, want %#x", s.value, s.mask, got, s.want)
			}
		}
		if got := kc.markMask.Load(); got != maskSupported {
			t.Errorf("mask support = %d after masked writes on bits outside the mask, want supported (%d)", got, maskSupported)
		}
		if kc.Stats().MarkRMW != 0 {
			t.Errorf("MarkRMW = %d on a kernel with CTA_MARK_MASK", kc.Stats().MarkRMW)
		}

		// The read-modify-write fallback against the real kernel.
		rmw, err := Open(ctx, Options{Namespace: l.srv.Path(), MarkMask: MarkMaskReadModifyWrite})
		if err != nil {
			t.Fatal(err)
		}
		defer rmw.Close()
		if err := rmw.SetMark(ctx, tcpOrig, 0x0c00, 0x0f00); err != nil {
			t.Fatal(err)
		}
		if got := mark(rmw); got != 0xac34 {
			t.Errorf("read-modify-write SetMark: mark %#x, want 0xac34", got)
		}
		if n := rmw.Stats().MarkRMW; n != 1 {
			t.Errorf("MarkRMW = %d, want 1", n)
		}

		// The kernel's own view, through the conntrack tool when it is
		// there (it prints the mark in decimal).
		if _, err := exec.LookPath("conntrack"); err == nil {
			out, err := l.srv.Exec(nil, "conntrack", "-L", "-p", "tcp", "--sport", strconv.Itoa(int(tcpOrig.SrcPort)))
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("mark=%d ", 0xac34); !strings.Contains(string(out), want) {
				t.Errorf("conntrack -L shows no %q:\n%s", want, out)
			}
		} else {
			t.Log("conntrack tool not installed: mark checked through ctnetlink only")
		}
		missing := tcpOrig
		missing.SrcPort++
		for _, mask := range []uint32{0, 1, ^uint32(0)} {
			if err := kc.SetMark(ctx, missing, 1, mask); !errors.Is(err, ErrNotFound) {
				t.Errorf("SetMark(mask %#x) on a missing entry: %v, want ErrNotFound", mask, err)
			}
		}
		if err := kc.SetMark(ctx, Tuple{Family: 4, Proto: packet.ProtoUDP}, 1, 1); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("SetMark with a malformed tuple: %v, want an encoding error", err)
		}
	})

	t.Run("DeleteExpiresUserspace", func(t *testing.T) {
		// The userspace table tracks the same UDP flow from the packets'
		// own bytes; the kernel's destroy event must expire it there.
		table := conntrack.New(conntrack.Config{})
		now := time.Now()
		for _, raw := range [][]byte{
			ipv4(cliIP, srvIP, packet.ProtoUDP, udpHdr(udpOrig.SrcPort, udpOrig.DstPort, []byte("q"))),
			ipv4(srvIP, cliIP, packet.ProtoUDP, udpHdr(udpOrig.DstPort, udpOrig.SrcPort, []byte("r"))),
		} {
			r := table.Track(view(t, raw), now)
			if !r.Confirm(now) {
				t.Fatal("userspace table refused the flow")
			}
		}
		if _, _, ok := table.Lookup(udpOrig, now); !ok {
			t.Fatal("userspace table has no entry for the UDP flow")
		}
		var expired sync.Map
		wctx, cancel := context.WithCancel(ctx)
		ew, err := kc.Watch(wctx, WatchOptions{}, Expirer(func(tu Tuple) {
			expired.Store(tu, table.Delete(tu))
		}, nil))
		if err != nil {
			t.Fatal(err)
		}

		if err := kc.Delete(ctx, udpReply); err != nil {
			t.Fatal(err)
		}
		ev := events.wait(t, 10*time.Second, "UDP destroy", isEvent(EventDestroy, udpOrig))
		if ev.Entry.Packets != [2]uint64{1, 1} || ev.Entry.Reply != udpReply {
			t.Errorf("destroy event entry %s", ev.Entry.String())
		}
		poll(t, 10*time.Second, func() error {
			if v, ok := expired.Load(udpOrig); !ok || !v.(bool) {
				return fmt.Errorf("Expirer did not delete %s from the userspace table (seen %v, deleted %v)", tupleString(udpOrig), ok, v)
			}
			return nil
		})
		if _, _, ok := table.Lookup(udpOrig, now); ok {
			t.Error("userspace table still has the UDP flow")
		}
		if _, _, err := kc.Lookup(ctx, udpOrig); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup after Delete: %v, want ErrNotFound", err)
		}
		if err := kc.Delete(ctx, udpOrig); !errors.Is(err, ErrNotFound) {
			t.Errorf("second Delete: %v, want ErrNotFound", err)
		}
		cancel()
		if err := ew.Wait(); err != nil {
			t.Errorf("watcher ended with %v after its context was cancelled", err)
		}
	})

	t.Run("Flush", func(t *testing.T) {
		if err := kc.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		ev := events.wait(t, 10*time.Second, "TCP destroy", isEvent(EventDestroy, tcpOrig))
		if ev.Entry.ID != tcpEntry.ID || ev.Entry.Mark != 0xac34 {
			t.Errorf("TCP destroy event %s, want id %d mark 0xac34", ev.Entry.String(), tcpEntry.ID)
		}
		if _, _, err := kc.Lookup(ctx, tcpOrig); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup after Flush: %v", err)
		}
	})
	tcpServer.Close()

	if st := kc.Stats(); st.Overruns != 0 || st.DecodeErrors != 0 || st.Events < 4 || st.Requests == 0 {
		t.Errorf("stats %+v", st)
	}
	if err := kc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); !errors.Is(err, ErrClosed) {
		t.Errorf("watcher of a closed Conn ended with %v, want ErrClosed", err)
	}
	if _, err := kc.List(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("List on a closed Conn: %v", err)
	}
}

// TestKernelExpiry checks that an entry the kernel lets time out (not
// deleted by anyone) is reported by a destroy event.
func TestKernelExpiry(t *testing.T) {
	l := newLab(t)
	ctx := t.Context()
	if err := l.srv.SetSysctl("net.netfilter.nf_conntrack_udp_timeout", "1"); err != nil {
		t.Fatal(err)
	}
	kc := l.open(t, nil)
	events := newCollector()
	if _, err := kc.Watch(ctx, WatchOptions{}, events.add); err != nil {
		t.Fatal(err)
	}
	client, _ := l.udp(t, false) // unreplied: nf_conntrack_udp_timeout
	orig := flowTuple(packet.ProtoUDP, client)
	e, _, err := kc.Lookup(ctx, orig)
	if err != nil {
		t.Fatal(err)
	}
	if e.Timeout > time.Second || e.Status&conntrack.StatusSeenReply != 0 {
		t.Fatalf("unreplied entry %s, want timeout at most 1 s", e.String())
	}
	// The kernel removes an expired entry when its GC worker gets to it
	// (an interval that adapts to the load, up to a minute) or as soon
	// as a lookup meets it (____nf_conntrack_find reaps expired entries
	// it walks past). Polling with Lookup takes the second path, so the
	// destroy event follows the timeout closely; nobody deletes the
	// entry.
	start := time.Now()
	poll(t, 60*time.Second, func() error {
		_, _, err := kc.Lookup(ctx, orig)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("entry still there (%v)", err)
	})
	ev := events.wait(t, 10*time.Second, "expiry destroy", isEvent(EventDestroy, orig))
	t.Logf("destroy event %v after the last packet: %s", time.Since(start).Round(time.Millisecond), ev.Entry.String())
	if ev.Entry.ID != e.ID || ev.Entry.Packets != [2]uint64{1, 0} {
		t.Errorf("destroy event %s, want id %d with one original packet", ev.Entry.String(), e.ID)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger used from the watcher's
// goroutine.
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

// burst makes n short-lived UDP flows from cli to srv, one datagram each
// to ports base..base+n-1 (nobody listens: the kernel still tracks them).
func (l *lab) burst(t testing.TB, base, n int) []Tuple {
	t.Helper()
	var c *net.UDPConn
	if err := l.cli.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(cliIP, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sport := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	out := make([]Tuple, n)
	for i := range n {
		dport := uint16(base + i)
		if _, err := c.WriteToUDPAddrPort([]byte("b"), netip.AddrPortFrom(srvIP, dport)); err != nil {
			t.Fatal(err)
		}
		out[i] = conntrack.TupleFrom(cliIP, srvIP, packet.ProtoUDP, sport, dport)
	}
	return out
}

// waitEntries polls the kernel table until it holds all of want.
func waitEntries(t *testing.T, kc *Conn, want []Tuple) {
	t.Helper()
	poll(t, 20*time.Second, func() error {
		es, err := kc.List(t.Context())
		if err != nil {
			return err
		}
		missing := 0
		for _, tu := range want {
			if _, ok := find(es, tu); !ok {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d flows not in the kernel table", missing, len(want))
		}
		return nil
	})
}

// blockedCollector records events but holds the watcher's goroutine in
// its first callback until release is closed, as a consumer that stalls.
type blockedCollector struct {
	*collector
	release chan struct{}
	once    sync.Once
	entered chan struct{}
}

func newBlockedCollector() *blockedCollector {
	return &blockedCollector{collector: newCollector(), release: make(chan struct{}), entered: make(chan struct{})}
}

func (b *blockedCollector) add(ev Event) {
	b.once.Do(func() {
		close(b.entered)
		<-b.release
	})
	b.collector.add(ev)
}

// TestKernelOverrun drives a watcher with the smallest receive buffer and a
// stalled callback through a burst of new flows: the kernel must drop
// events, and the watcher must count, log and report the loss.
func TestKernelOverrun(t *testing.T) {
	l := newLab(t)
	ctx := t.Context()
	var logs syncBuffer
	kc := l.open(t, slog.New(slog.NewTextHandler(&logs, nil)))
	bc := newBlockedCollector()
	w, err := kc.Watch(ctx, WatchOptions{Types: []EventType{EventNew, EventDestroy}, ReadBuffer: 1}, bc.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tiny event socket buffer: %d bytes", w.ReadBuffer())
	if w.ReadBuffer() > 16<<10 {
		t.Fatalf("ReadBuffer 1 gave a %d byte buffer", w.ReadBuffer())
	}
	const n = 200
	flows := l.burst(t, 20000, n)
	waitEntries(t, kc, flows)
	select {
	case <-bc.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher delivered no event at all")
	}
	close(bc.release)
	bc.wait(t, 10*time.Second, "lost", func(ev Event) bool { return ev.Type == EventLost })
	if w.Overruns() == 0 || kc.Stats().Overruns != w.Overruns() {
		t.Errorf("overruns: watcher %d, conn %d", w.Overruns(), kc.Stats().Overruns)
	}
	news := bc.count(func(ev Event) bool { return ev.Type == EventNew })
	if news >= n {
		t.Errorf("all %d new events arrived through a %d byte buffer: no overrun provoked", news, w.ReadBuffer())
	}
	t.Logf("%d of %d new events delivered, %d overruns", news, n, w.Overruns())
	if !strings.Contains(logs.String(), "conntrack events lost") {
		t.Errorf("overrun not logged; log:\n%s", logs.String())
	}
	// The watcher reads on after an overrun: later events still arrive.
	if err := kc.Delete(ctx, flows[0]); err != nil {
		t.Fatal(err)
	}
	bc.wait(t, 10*time.Second, "destroy after overrun", isEvent(EventDestroy, flows[0]))
}

// TestKernelReliableDestroy stalls a ReliableDestroy watcher with the
// smallest buffer while the kernel destroys a burst of entries: the
// kernel keeps the undelivered ones and redelivers them, so every destroy
// event arrives once the consumer reads again.
func TestKernelReliableDestroy(t *testing.T) {
	l := newLab(t)
	ctx := t.Context()
	kc := l.open(t, slog.New(slog.DiscardHandler))
	bc := newBlockedCollector()
	w, err := kc.Watch(ctx, WatchOptions{ReadBuffer: 1, ReliableDestroy: true}, bc.add)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	flows := l.burst(t, 21000, n)
	waitEntries(t, kc, flows)
	if err := kc.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bc.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher delivered no event at all")
	}
	close(bc.release)
	for _, tu := range flows {
		bc.wait(t, 30*time.Second, "redelivered destroy", isEvent(EventDestroy, tu))
	}
	t.Logf("all %d destroy events delivered through a %d byte buffer; %d overruns reported", n, w.ReadBuffer(), w.Overruns())
}

// TestKernelThreadNamespace opens a Conn from inside the server namespace
// (netns.Namespace.Do) with no path, then uses it and watches from outside
// it: every socket must belong to the server's namespace, and none to the
// test process's own.
func TestKernelThreadNamespace(t *testing.T) {
	l := newLab(t)
	ctx := t.Context()
	var kc *Conn
	if err := l.srv.Do(func() (err error) {
		kc, err = Open(ctx, Options{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	events := newCollector()
	if _, err := kc.Watch(ctx, WatchOptions{}, events.add); err != nil { // outside Do
		t.Fatal(err)
	}
	client, _ := l.udp(t, true)
	orig := flowTuple(packet.ProtoUDP, client)
	es, err := kc.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := find(es, orig); !ok {
		t.Fatalf("flow %s not in the table of the namespace Open ran in (%d entries)", tupleString(orig), len(es))
	}
	if err := kc.Delete(ctx, orig); err != nil {
		t.Fatal(err)
	}
	events.wait(t, 10*time.Second, "destroy", isEvent(EventDestroy, orig))
}
