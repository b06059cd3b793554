package matchers

import (
	"net"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/qtables/qtables/conntrack"
)

// connlimitFmt were checked against iptables-save / iptables -L[ -n] 1.8.9.
var connlimitFmt = []fmtVector{
	{opts: "--connlimit-above 2", save: " --connlimit-above 2 --connlimit-mask 32 --connlimit-saddr", listN: " #conn src/32 > 2"},
	{opts: "--connlimit-upto 2", save: " --connlimit-upto 2 --connlimit-mask 32 --connlimit-saddr", listN: " #conn src/32 <= 2"},
	{opts: "! --connlimit-above 2", save: " --connlimit-upto 2 --connlimit-mask 32 --connlimit-saddr", listN: " #conn src/32 <= 2"},
	{opts: "! --connlimit-upto 2", save: " --connlimit-above 2 --connlimit-mask 32 --connlimit-saddr", listN: " #conn src/32 > 2"},
	{opts: "--connlimit-above 2 --connlimit-mask 24 --connlimit-daddr", save: " --connlimit-above 2 --connlimit-mask 24 --connlimit-daddr", listN: " #conn dst/24 > 2"},
	{opts: "--connlimit-above 2 --connlimit-mask 0", save: " --connlimit-above 2 --connlimit-mask 0 --connlimit-saddr", listN: " #conn src/0 > 2"},
	{opts: "--connlimit-above 2 --connlimit-mask 33", save: " --connlimit-above 2 --connlimit-mask 32 --connlimit-saddr", listN: " #conn src/32 > 2"},
	{opts: "--connlimit-above 2 --connlimit-mask 0x8", save: " --connlimit-above 2 --connlimit-mask 8 --connlimit-saddr", listN: " #conn src/8 > 2"},
	{opts: "--connlimit-above 2 --connlimit-mask 255.0.0.0", save: " --connlimit-above 2 --connlimit-mask 8 --connlimit-saddr", listN: " #conn src/8 > 2"},
	{opts: "--connlimit-above 2 --connlimit-mask 255.0.255.0", save: " --connlimit-above 2 --connlimit-mask 32 --connlimit-saddr", listN: " #conn src/32 > 2"},
	{opts: "--connlimit-above 4294967295", save: " --connlimit-above 4294967295 --connlimit-mask 32 --connlimit-saddr", listN: " #conn src/32 > 4294967295"},
	{opts: "--connlimit-above 0x10 --connlimit-saddr", save: " --connlimit-above 16 --connlimit-mask 32 --connlimit-saddr", listN: " #conn src/32 > 16"},
}

var connlimitErr = []errVector{
	{opts: "--connlimit-above 4294967296", err: "out of range"},
	{opts: "--connlimit-above 2 --connlimit-upto 3", err: "cannot be used together"},
	{opts: "--connlimit-above 2 --connlimit-saddr --connlimit-daddr", err: "cannot be used together"},
	{opts: "--connlimit-above 2 --connlimit-daddr --connlimit-daddr", err: "can only be used once"},
	{opts: "", err: `You must specify "--connlimit-above" or "--connlimit-upto"`},
	{opts: "--connlimit-mask 8", err: "You must specify"},
	{opts: "--connlimit-above 2 --connlimit-mask -1", err: "neither a valid network mask"},
	{opts: "--connlimit-above 2 --connlimit-mask x", err: "neither a valid network mask"},
}

func TestConnlimitFormats(t *testing.T) { runFmtVectors(t, "connlimit", connlimitFmt) }

func TestConnlimitErrors(t *testing.T) { runErrVectors(t, "connlimit", connlimitErr) }

// TestConnlimitCounting follows nf_conncount's lists through connections
// opened, dropped and closed: the count includes the packet's own
// connection, stale tuples are dropped when a packet is added (at most
// once per jiffy for connections not confirmed yet), and a connection is
// listed once.
func TestConnlimitCounting(t *testing.T) {
	r := newCtRig(t)
	above2 := mustBuild(t, "connlimit", ruleTCP, "--connlimit-above 2").(*connlimitMatch)
	count := func(c *Context) uint64 { return above2.count(c) }
	syn := func(src net.IP, sport uint16) []byte { return tcpSeg(t, src, ipS, sport, 80, "S", 1000, 0, 0) }

	c := r.track(syn(ipC, 1001))
	if n := count(c); n != 1 {
		t.Fatalf("first SYN: count %d", n)
	}
	r.accept()
	c = r.track(syn(ipC, 1002))
	if n := count(c); n != 2 {
		t.Fatalf("second SYN: count %d, want 2", n)
	}
	r.accept()
	c = r.track(syn(ipC, 1003))
	if n := count(c); n != 3 {
		t.Fatalf("third SYN: count %d, want 3", n)
	}
	r.drop() // as "-j REJECT" would: its connection is never confirmed
	c = r.track(syn(ipC, 1004))
	if n := count(c); n != 3 {
		t.Fatalf("SYN after a dropped one: count %d, want 3 (the dropped one is gone)", n)
	}
	r.drop()
	// Another source has its own list.
	c = r.track(syn(ipC2, 1001))
	if n := count(c); n != 1 {
		t.Fatalf("other source: count %d, want 1", n)
	}
	r.accept()

	// A packet of a listed connection: the cleaning stops where it finds
	// it, first in the list, so the dropped SYN of port 1004 still counts.
	c = r.track(tcpSeg(t, ipC, ipS, 1001, 80, "S", 1000, 0, 0)) // retransmission
	if n := count(c); n != 3 {
		t.Fatalf("retransmitted SYN of a listed connection: count %d, want 3 (1001, 1002, stale 1004)", n)
	}
	r.accept()
	// 1002's retransmission: 1001 is alive, 1002 found, 1004 still there.
	c = r.track(tcpSeg(t, ipC, ipS, 1002, 80, "S", 1000, 0, 0))
	if n := count(c); n != 3 {
		t.Fatalf("retransmitted SYN 1002: count %d, want 3", n)
	}
	r.accept()

	// Close 1001 with FIN exchanges: TIME_WAIT connections no longer count.
	r.pass(tcpSeg(t, ipS, ipC, 80, 1001, "SA", 5000, 1001, 0))
	r.pass(tcpSeg(t, ipC, ipS, 1001, 80, "A", 1001, 5001, 0))
	r.pass(tcpSeg(t, ipC, ipS, 1001, 80, "FA", 1001, 5001, 0))
	r.pass(tcpSeg(t, ipS, ipC, 80, 1001, "FA", 5001, 1002, 0))
	r.pass(tcpSeg(t, ipC, ipS, 1001, 80, "A", 1002, 5002, 0))
	c = r.track(syn(ipC, 1005))
	if n := count(c); n != 2 {
		t.Fatalf("SYN after a close: count %d, want 2 (1002 and this one; closed 1001 and stale 1004 cleaned)", n)
	}
	r.accept()

	// Two unconfirmed connections within one jiffy: the second add skips
	// the cleaning, so the dropped first one still counts.
	c = r.track(syn(ipC, 1006))
	if n := count(c); n != 3 {
		t.Fatalf("SYN 1006: count %d, want 3", n)
	}
	r.drop()
	r.now = r.now.Add(-9 * time.Millisecond) // next track adds 10 ms: 1 ms later
	c = r.track(syn(ipC, 1007))
	if n := count(c); n != 4 {
		t.Fatalf("second SYN in one jiffy: count %d, want 4 (1002, 1005, stale 1006, 1007)", n)
	}
	r.drop()
}

// TestConnlimitAssured checks the packets that are counted without being
// added, as the kernel showed (TestKernelStateFacts): an assured
// connection's packets clean the list and count it; the ACK that moves a
// connection to TIME_WAIT cleans the connection itself out, and a list
// emptied so counts 0: hotdrop.
func TestConnlimitAssured(t *testing.T) {
	r := newCtRig(t)
	m := mustBuild(t, "connlimit", ruleAny, "--connlimit-above 5 --connlimit-mask 0").(*connlimitMatch)
	steps := []struct {
		from     net.IP
		sp, dp   uint16
		flags    string
		seq, ack uint32
		data     int
		want     uint64
	}{
		{ipC, 40000, 80, "S", 1000, 0, 0, 1},      // first packet: a new list
		{ipS, 80, 40000, "SA", 5000, 1001, 0, 1},  // reply, not assured: added (listed already)
		{ipC, 40000, 80, "A", 1001, 5001, 0, 1},   // now assured
		{ipC, 40000, 80, "PA", 1001, 5001, 10, 1}, // counted only
		{ipS, 80, 40000, "A", 5001, 1011, 0, 1},
		{ipC, 40000, 80, "FA", 1011, 5001, 0, 1},
		{ipS, 80, 40000, "A", 5001, 1012, 0, 1},
		{ipS, 80, 40000, "FA", 5001, 1012, 0, 1},
		{ipC, 40000, 80, "A", 1012, 5002, 0, 0}, // TIME_WAIT: cleaned out, 0: hotdrop
	}
	for i, st := range steps {
		to := ipS
		if st.from.Equal(ipS) {
			to = ipC
		}
		c := r.track(tcpSeg(t, st.from, to, st.sp, st.dp, st.flags, st.seq, st.ack, st.data))
		if got := m.Match(c); got || c.Hotdrop != (st.want == 0) {
			t.Errorf("packet %d (%s): match %v hotdrop %v, want count %d", i+1, st.flags, got, c.Hotdrop, st.want)
		}
		r.accept()
	}
	// The emptied list stays: the next assured packet counts 0 too, a
	// new connection starts it again.
	c := r.track(tcpSeg(t, ipS, ipC, 80, 40000, "A", 5002, 1012, 0))
	if m.Match(c); !c.Hotdrop {
		t.Error("assured packet on an emptied list: no hotdrop")
	}
	r.accept()
	c = r.track(udpDgram(t, ipC, ipS, 1, 2, 0))
	if n := m.count(c); n != 1 {
		t.Errorf("new connection on an emptied list: count %d, want 1", n)
	}
}

func TestConnlimitKeys(t *testing.T) {
	r := newCtRig(t)
	dst24 := mustBuild(t, "connlimit", ruleAny, "--connlimit-upto 1 --connlimit-mask 24 --connlimit-daddr")
	all := mustBuild(t, "connlimit", ruleAny, "--connlimit-above 1 --connlimit-mask 0")
	c := r.track(udpDgram(t, ipC, ipS, 1, 53, 0))
	if !dst24.Match(c) || all.Match(c) {
		t.Fatal("first flow: upto 1 must hold, above 1 must not")
	}
	r.accept()
	c = r.track(udpDgram(t, ipC2, ipS2, 1, 53, 0)) // same /24 destination
	if dst24.Match(c) || !all.Match(c) {
		t.Fatal("second flow to the same /24: 2 connections")
	}
	r.accept()
	// The reply's key is its own destination (a client's /24): a list of
	// its own, where the connection is listed by its original tuple.
	c = r.track(udpDgram(t, ipS, ipC, 53, 1, 0))
	if !dst24.Match(c) {
		t.Fatal("reply to 10.1.0.0/24: a list of its own with one connection")
	}
	r.accept()
	// Confirmed connections are listed too: the second flow's reply
	// joins the list of 10.1.0.0/24.
	c = r.track(udpDgram(t, ipS2, ipC2, 53, 1, 0))
	if dst24.Match(c) || !all.Match(c) {
		t.Fatal("second reply to 10.1.0.0/24: 2 connections")
	}
	r.accept()
}

func TestConnlimitHotdrop(t *testing.T) {
	r := newCtRig(t)
	m := mustBuild(t, "connlimit", ruleAny, "--connlimit-above 0")
	// A TCP header of 2 bytes: no connection, no tuple to count.
	d := encode(t, ip4(layers.IPProtocolTCP, ipC, ipS), gopacket.Payload([]byte{1, 2}))
	c := r.track(d)
	if m.Match(c) || !c.Hotdrop {
		t.Fatalf("short TCP header: hotdrop %v", c.Hotdrop)
	}
	// An INVALID packet with a tuple is counted by its own tuple.
	c = r.track(tcpSeg(t, ipC, ipS, 1, 2, "F", 1, 0, 0))
	if !m.Match(c) || c.Hotdrop {
		t.Fatal("stray FIN: not counted")
	}
}

func TestConnlimitConcurrent(t *testing.T) {
	m := mustBuild(t, "connlimit", ruleAny, "--connlimit-above 100 --connlimit-mask 0").(*connlimitMatch)
	tab := conntrack.New(conntrack.Config{Shards: 4})
	done := make(chan bool)
	for w := range 4 {
		go func() {
			defer func() { done <- true }()
			r := newCtRig(t)
			r.tab = tab
			for i := range 200 {
				c := r.track(udpDgram(t, ipC, ipS, uint16(w*1000+i), 53, 0))
				m.Match(c)
				r.accept()
			}
		}()
	}
	for range 4 {
		<-done
	}
}
