package conntrack

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
)

func TestUDPTimeouts(t *testing.T) {
	h := newHarness(t, Config{})
	req := udpFrame(t, ipClient, ipServer, 5353, 53, []byte("query"))
	resp := udpFrame(t, ipServer, ipClient, 53, 5353, []byte("answer"))
	tu := TupleFrom(addr(ipClient), addr(ipServer), 17, 5353, 53)

	check := func(what string, r Result, info CtInfo, dir Dir, timeout time.Duration, status Status) {
		t.Helper()
		if r.Info != info || r.Dir != dir {
			t.Fatalf("%s: %v, want %v/%v", what, r, info, dir)
		}
		e, _, ok := h.tab.Lookup(tu, h.now)
		if !ok {
			t.Fatalf("%s: no entry", what)
		}
		if got := e.Timeout(h.now); got != timeout {
			t.Fatalf("%s: timeout %v, want %v", what, got, timeout)
		}
		if got := e.Status() &^ StatusConfirmed; got != status {
			t.Fatalf("%s: status %#x, want %#x", what, got, status)
		}
	}
	check("request", h.send(req), CtNew, DirOriginal, 30*sec, 0)
	h.advance(500 * time.Millisecond)
	// Unreplied: repeated requests are NEW each time and refresh to 30 s.
	check("repeat", h.send(req), CtNew, DirOriginal, 30*sec, 0)
	h.advance(500 * time.Millisecond)
	// The first reply still gets the unreplied timeout: SEEN_REPLY is set
	// after the handler runs.
	check("reply", h.send(resp), CtEstablished, DirReply, 30*sec, StatusSeenReply)
	h.advance(500 * time.Millisecond)
	// Within 2 s of creation: not a stream yet.
	check("early", h.send(req), CtEstablished, DirOriginal, 30*sec, StatusSeenReply)
	h.advance(600 * time.Millisecond) // 2.1 s after creation
	check("stream", h.send(resp), CtEstablished, DirReply, 120*sec, StatusSeenReply|StatusAssured)
	h.advance(119 * sec)
	check("idle", h.send(req), CtEstablished, DirOriginal, 120*sec, StatusSeenReply|StatusAssured)
	// Idle for the whole stream timeout: gone; the next packet is NEW.
	h.advance(120 * sec)
	if r := h.send(resp); r.Info != CtNew || r.Dir != DirOriginal || r.Entry.Orig().SrcPort != 53 {
		t.Fatalf("after expiry the server's packet starts a new connection: %v", r)
	}
	st := h.tab.Stats()
	if st.Expired != 1 || st.Inserted != 2 || st.Entries != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUDPLengthErrors(t *testing.T) {
	h := newHarness(t, Config{})
	good := udpFrame(t, ipClient, ipServer, 1000, 2000, []byte("hello"))
	// UDP length field larger than the datagram, and smaller than 8.
	long := append([]byte(nil), good...)
	long[24], long[25] = 0, 200
	short := append([]byte(nil), good...)
	short[24], short[25] = 0, 7
	for name, f := range map[string][]byte{"long": long, "short": short} {
		if r := h.send(f); r.Info != CtInvalid || r.Reason != ReasonUDPHeader {
			t.Fatalf("%s: %v", name, r)
		}
	}
	if h.tab.Len() != 0 {
		t.Fatal("invalid UDP created an entry")
	}
	h.send(good)
	if r := h.send(long); r.Info != CtInvalid {
		t.Fatalf("bad length on a tracked flow: %v", r)
	}
}

func TestChecksumOption(t *testing.T) {
	good := udpFrame(t, ipClient, ipServer, 1000, 2000, []byte("hello"))
	bad := append([]byte(nil), good...)
	bad[26] ^= 0xff
	zero := append([]byte(nil), good...)
	zero[26], zero[27] = 0, 0 // no checksum: always fine
	syn := tcpFrame(t, seg{src: ipClient, dst: ipServer, sport: 1, dport: 2, flags: "S", seq: 1})
	badSyn := append([]byte(nil), syn...)
	badSyn[36] ^= 0x01
	ping := icmpFrame(t, ipClient, ipServer, 8, 0, 1, 1, []byte("x"))
	badPing := append([]byte(nil), ping...)
	badPing[22] ^= 0x01

	on := newHarness(t, Config{Checksum: true})
	off := newHarness(t, Config{})
	for _, c := range []struct {
		name  string
		frame []byte
		onOK  bool
	}{
		{"udp good", good, true}, {"udp bad", bad, false}, {"udp zero", zero, true},
		{"tcp good", syn, true}, {"tcp bad", badSyn, false},
		{"icmp good", ping, true}, {"icmp bad", badPing, false},
	} {
		r := on.tab.Track(decode(t, c.frame), on.now)
		r.Discard()
		if (r.Info != CtInvalid) != c.onOK || (!c.onOK && r.Reason != ReasonChecksum) {
			t.Errorf("%s with checksums: %v", c.name, r)
		}
		r = off.tab.Track(decode(t, c.frame), off.now)
		r.Discard()
		if r.Info != CtNew {
			t.Errorf("%s without checksums: %v", c.name, r)
		}
	}
}

func TestICMPEcho(t *testing.T) {
	h := newHarness(t, Config{})
	req := icmpFrame(t, ipClient, ipServer, 8, 0, 0x1234, 1, []byte("ping"))
	rep := icmpFrame(t, ipServer, ipClient, 0, 0, 0x1234, 1, []byte("ping"))

	if r := h.send(rep); r.Info != CtInvalid || r.Reason != ReasonICMPType {
		t.Fatalf("unsolicited echo reply: %v", r)
	}
	if r := h.send(req); r.Info != CtNew || r.Entry.Timeout(h.now) != 30*sec {
		t.Fatalf("echo request: %v %v", r, r.Entry.Timeout(h.now))
	}
	h.advance(sec)
	if r := h.send(rep); r.Info != CtEstablished || r.Dir != DirReply {
		t.Fatalf("echo reply: %v", r)
	}
	// Duplicates keep working: the entry stays after the first reply.
	if r := h.send(rep); r.Info != CtEstablished || r.Dir != DirReply || r.Entry.Timeout(h.now) != 30*sec {
		t.Fatalf("duplicate reply: %v", r)
	}
	if r := h.send(req); r.Info != CtEstablished || r.Dir != DirOriginal {
		t.Fatalf("second request: %v", r)
	}
	// Another identifier is another connection; so is another code.
	if r := h.send(icmpFrame(t, ipServer, ipClient, 0, 0, 0x9999, 1, nil)); r.Info != CtInvalid {
		t.Fatalf("reply with another id: %v", r)
	}
	if r := h.send(icmpFrame(t, ipServer, ipClient, 0, 1, 0x1234, 1, nil)); r.Info != CtInvalid {
		t.Fatalf("reply with another code: %v", r)
	}
	// The other query types.
	for _, q := range [][2]uint8{{13, 14}, {15, 16}, {17, 18}} {
		if r := h.send(icmpFrame(t, ipClient, ipServer, q[0], 0, 7, 0, make([]byte, 12))); r.Info != CtNew {
			t.Fatalf("type %d: %v", q[0], r)
		}
		if r := h.send(icmpFrame(t, ipServer, ipClient, q[1], 0, 7, 0, make([]byte, 12))); r.Info != CtEstablished || r.Dir != DirReply {
			t.Fatalf("type %d: %v", q[1], r)
		}
	}
	// Types that cannot form a connection, and unknown types.
	for _, typ := range []uint8{9, 10, 1, 2, 6, 7, 19, 40, 255} {
		if r := h.send(icmpFrame(t, ipClient, ipServer, typ, 0, 7, 0, nil)); r.Info != CtInvalid || r.Reason != ReasonICMPType {
			t.Fatalf("type %d: %v", typ, r)
		}
	}
	if n := h.tab.Len(); n != 4 {
		t.Fatalf("%d entries, want 4", n)
	}
}

// TestICMPErrors: errors quoting a tracked connection are RELATED to it in
// the direction the quoted packet's inverse has; anything else is INVALID.
func TestICMPErrors(t *testing.T) {
	h := newHarness(t, Config{})
	syn := tcpFrame(t, seg{src: ipClient, dst: ipServer, sport: cPort, dport: sPort, flags: "S", seq: 1000})
	synack := tcpFrame(t, seg{src: ipServer, dst: ipClient, sport: sPort, dport: cPort, flags: "SA", seq: 5000, ack: 1001})
	dns := udpFrame(t, ipClient, ipServer, 5353, 53, []byte("q"))
	ping := icmpFrame(t, ipClient, ipServer, 8, 0, 77, 1, []byte("abcdefgh"))
	h.send(syn)
	h.send(dns)
	h.send(ping)
	before := h.tab.Snapshot(h.now)

	cases := []struct {
		name     string
		frame    []byte
		info     CtInfo
		dir      Dir
		proto    uint8
		reversed bool
	}{
		{"port unreachable from the server about the UDP query",
			icmpErrorFrame(t, ipServer, ipClient, 3, 3, dns, 28), CtRelated, DirReply, 17, false},
		{"time exceeded from a router about the SYN",
			icmpErrorFrame(t, ipRouter, ipClient, 11, 0, syn, 28), CtRelated, DirReply, 6, false},
		{"whole quoted datagram", icmpErrorFrame(t, ipRouter, ipClient, 3, 4, syn, 1000), CtRelated, DirReply, 6, false},
		{"error about the echo request", icmpErrorFrame(t, ipRouter, ipClient, 3, 1, ping, 28), CtRelated, DirReply, 1, false},
		{"redirect, source quench and parameter problem are errors too",
			icmpErrorFrame(t, ipRouter, ipClient, 5, 1, dns, 28), CtRelated, DirReply, 17, false},
		{"source quench", icmpErrorFrame(t, ipRouter, ipClient, 4, 0, dns, 28), CtRelated, DirReply, 17, false},
		{"parameter problem", icmpErrorFrame(t, ipRouter, ipClient, 12, 0, dns, 28), CtRelated, DirReply, 17, false},
		{"error from the client about the server's packet (original direction)",
			icmpErrorFrame(t, ipClient, ipServer, 3, 3, synack, 28), CtRelated, DirOriginal, 6, true},
		{"outer destination is not the connection's", icmpErrorFrame(t, ipServer, ipOther, 3, 3, dns, 28), CtInvalid, 0, 0, false},
		{"quoting an unknown flow", icmpErrorFrame(t, ipServer, ipClient, 3, 3,
			udpFrame(t, ipClient, ipServer, 9999, 53, nil), 28), CtInvalid, 0, 0, false},
		{"quoted header cut before the ports", icmpErrorFrame(t, ipServer, ipClient, 3, 3, dns, 22), CtInvalid, 0, 0, false},
		{"quoted IP header cut", icmpErrorFrame(t, ipServer, ipClient, 3, 3, dns, 12), CtInvalid, 0, 0, false},
		{"nothing quoted", icmpErrorFrame(t, ipServer, ipClient, 3, 3, nil, 0), CtInvalid, 0, 0, false},
		{"garbage quoted", icmpErrorFrame(t, ipServer, ipClient, 3, 3, []byte(strings.Repeat("\xff", 40)), 40), CtInvalid, 0, 0, false},
		{"quoting an ICMP error", icmpErrorFrame(t, ipServer, ipClient, 3, 3,
			icmpErrorFrame(t, ipClient, ipServer, 3, 3, dns, 28), 28), CtInvalid, 0, 0, false},
		{"quoting an echo reply nobody asked for", icmpErrorFrame(t, ipServer, ipClient, 3, 3,
			icmpFrame(t, ipClient, ipServer, 0, 0, 77, 1, nil), 28), CtInvalid, 0, 0, false},
	}
	for _, c := range cases {
		r := h.send(c.frame)
		if r.Info != c.info || (c.info != CtInvalid && r.Dir != c.dir) {
			t.Errorf("%s: %v, want %v/%v", c.name, r, c.info, c.dir)
			continue
		}
		if c.info == CtRelated && r.Entry.Proto() != c.proto {
			t.Errorf("%s: related to a %d connection, want %d", c.name, r.Entry.Proto(), c.proto)
		}
		if c.info == CtInvalid && r.Reason != ReasonICMPError {
			t.Errorf("%s: reason %q", c.name, r.Reason)
		}
	}
	// Errors are neither accounted nor refresh anything.
	after := h.tab.Snapshot(h.now)
	if len(after) != len(before) {
		t.Fatalf("errors changed the table: %d entries, was %d", len(after), len(before))
	}
	for i := range before {
		b, a := before[i], after[i]
		if b.packets != a.packets || b.expires != a.expires || b.status != a.status {
			t.Errorf("entry %d changed:\n%s\n%s", i, b.Format(h.now), a.Format(h.now))
		}
	}
}

func TestICMPErrorAboutFragment(t *testing.T) {
	h := newHarness(t, Config{})
	dns := udpFrame(t, ipClient, ipServer, 5353, 53, []byte("q"))
	h.send(dns)
	frag := append([]byte(nil), dns...)
	frag[6], frag[7] = 0x00, 0x10 // fragment offset 16 (x 8 bytes)
	if r := h.send(icmpErrorFrame(t, ipServer, ipClient, 3, 3, frag, 28)); r.Info != CtInvalid {
		t.Fatalf("error quoting a non-first fragment: %v", r)
	}
}

func TestGenericProtocol(t *testing.T) {
	h := newHarness(t, Config{})
	out := rawFrame(t, layers.IPProtocolGRE, ipClient, ipServer, make([]byte, 8))
	back := rawFrame(t, layers.IPProtocolGRE, ipServer, ipClient, make([]byte, 8))
	if r := h.send(out); r.Info != CtNew || r.Entry.Timeout(h.now) != 600*sec {
		t.Fatalf("GRE: %v", r)
	}
	if r := h.send(back); r.Info != CtEstablished || r.Dir != DirReply {
		t.Fatalf("GRE reply: %v", r)
	}
	// Another protocol between the same hosts is another connection.
	if r := h.send(rawFrame(t, 253, ipClient, ipServer, nil)); r.Info != CtNew {
		t.Fatalf("proto 253: %v", r)
	}
}

func TestNotTrackable(t *testing.T) {
	h := newHarness(t, Config{})
	dns := udpFrame(t, ipClient, ipServer, 5353, 53, []byte("query"))
	frag := append([]byte(nil), dns...)
	frag[6], frag[7] = 0x00, 0x01
	for name, c := range map[string]struct {
		frame  []byte
		reason Reason
	}{
		"non-first fragment": {frag, ReasonFragment},
		"not IPv4":           {[]byte{0x60, 0, 0, 0}, ReasonNotIPv4},
		"UDP ports cut":      {dns[:22], ReasonTruncated},
		"TCP header cut": {tcpFrame(t, seg{src: ipClient, dst: ipServer, sport: 1, dport: 2, flags: "S"})[:30],
			ReasonTCPHeader},
	} {
		r := h.send(c.frame)
		if r.Info != CtInvalid || r.HasEntry() {
			t.Errorf("%s: %v", name, r)
		}
		if name != "TCP header cut" && r.Reason != c.reason {
			t.Errorf("%s: reason %q, want %q", name, r.Reason, c.reason)
		}
	}
}

// TestConntrackLFormat compares AppendConntrackL with lines the real
// conntrack tool (conntrack-tools 1.4.7, nf_conntrack_acct=1, Linux 6.18)
// printed for the same exchanges on a namespace's loopback, half a second
// after the last packet.
func TestConntrackLFormat(t *testing.T) {
	lo := net.IP{127, 0, 0, 1}
	ts := func(v uint32) []layers.TCPOption {
		d := []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v), 0, 0, 0, 1}
		return []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: d}}
	}
	synOpts := []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0xff, 0xd7}},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
	}
	c := func(flags string, seq, ack uint32, data int, opts []layers.TCPOption) []byte {
		return tcpFrame(t, seg{src: lo, dst: lo, sport: 46424, dport: 8080, flags: flags, seq: seq, ack: ack, data: data, win: 512, opts: opts})
	}
	s := func(flags string, seq, ack uint32, data int, opts []layers.TCPOption) []byte {
		return tcpFrame(t, seg{src: lo, dst: lo, sport: 8080, dport: 46424, flags: flags, seq: seq, ack: ack, data: data, win: 512, opts: opts})
	}
	cases := []struct {
		name   string
		frames [][]byte
		mark   uint32
		want   string
	}{
		{"udp unreplied", [][]byte{udpFrame(t, lo, lo, 43145, 5353, []byte("hi\n"))}, 0,
			"udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=43145 dport=5353 packets=1 bytes=31 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=5353 dport=43145 packets=0 bytes=0 mark=0 use=1"},
		{"udp replied", [][]byte{udpFrame(t, lo, lo, 37955, 6000, []byte("abc")), udpFrame(t, lo, lo, 6000, 37955, []byte("r"))}, 0,
			"udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=37955 dport=6000 packets=1 bytes=31 src=127.0.0.1 dst=127.0.0.1 sport=6000 dport=37955 packets=1 bytes=29 mark=0 use=1"},
		{"tcp half closed", [][]byte{
			c("S", 100, 0, 0, synOpts),
			s("SA", 900, 101, 0, synOpts),
			c("A", 101, 901, 0, ts(2)),
			s("PA", 901, 101, 1, ts(3)),
			c("A", 101, 902, 0, ts(4)),
			c("FA", 101, 902, 0, ts(5)),
			s("A", 902, 102, 0, ts(6)),
		}, 0,
			"tcp      6 59 CLOSE_WAIT src=127.0.0.1 dst=127.0.0.1 sport=46424 dport=8080 packets=4 bytes=216 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=46424 packets=3 bytes=165 [ASSURED] mark=0 use=1"},
		{"icmp echo", [][]byte{icmpFrame(t, lo, lo, 8, 0, 4660, 1, []byte("hello")), icmpFrame(t, lo, lo, 0, 0, 4660, 1, []byte("hello"))}, 0,
			"icmp     1 29 src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=4660 packets=1 bytes=33 src=127.0.0.1 dst=127.0.0.1 type=0 code=0 id=4660 packets=1 bytes=33 mark=0 use=1"},
		{"unknown protocol with a mark", [][]byte{rawFrame(t, 253, lo, lo, []byte("xyz"))}, 42,
			"unknown  253 599 src=127.0.0.1 dst=127.0.0.1 packets=1 bytes=23 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 packets=0 bytes=0 mark=42 use=1"},
	}
	for _, c := range cases {
		h := newHarness(t, Config{})
		var r Result
		for _, f := range c.frames {
			r = h.send(f)
			if r.Info == CtInvalid {
				t.Fatalf("%s: packet INVALID: %v", c.name, r)
			}
		}
		if c.mark != 0 {
			if _, ok := r.Ref.UpdateMark(^uint32(0), c.mark); !ok {
				t.Fatalf("%s: UpdateMark failed", c.name)
			}
		}
		h.advance(500 * time.Millisecond)
		var sb strings.Builder
		if n, err := h.tab.WriteConntrackL(&sb, h.now); err != nil || n != 1 {
			t.Fatalf("%s: wrote %d entries: %v", c.name, n, err)
		}
		if got := strings.TrimSuffix(sb.String(), "\n"); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}
