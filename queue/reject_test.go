package queue

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/matchers"
)

// The expected replies are serialized by gopacket from the fields the
// kernel's nf_reject_ipv4.c and icmp_send set (spec §6.2), with gopacket
// computing lengths and checksums: BuildReject must produce the same bytes.

// tcpSeg builds a TCP segment (with valid checksums) from client to server.
func tcpSeg(t testing.TB, flags string, seq, ack uint32, payload []byte, tos uint8) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 63, TOS: tos, Id: 7, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IPv4(10, 0, 1, 2), DstIP: net.IPv4(10, 0, 2, 2)}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: seq, Ack: ack, Window: 1000}
	for _, f := range flags {
		switch f {
		case 'S':
			tcp.SYN = true
		case 'A':
			tcp.ACK = true
		case 'F':
			tcp.FIN = true
		case 'R':
			tcp.RST = true
		case 'P':
			tcp.PSH = true
		}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, tcp, gopacket.Payload(payload))
}

func udpDgram(t testing.TB, tos uint8, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 63, TOS: tos, Id: 9, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IPv4(10, 0, 1, 2), DstIP: net.IPv4(10, 0, 2, 2)}
	u := &layers.UDP{SrcPort: 5000, DstPort: 53}
	if err := u.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, u, gopacket.Payload(payload))
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// wantRST is the kernel's RST for a segment from 10.0.1.2:40000 to
// 10.0.2.2:80: addresses and ports swapped, TOS 0, ID 0, DF, TTL 64,
// window 0, no options.
func wantRST(t *testing.T, seq, ack uint32, withACK bool) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IPv4(10, 0, 2, 2), DstIP: net.IPv4(10, 0, 1, 2)}
	tcp := &layers.TCP{SrcPort: 80, DstPort: 40000, Seq: seq, Ack: ack, RST: true, ACK: withACK}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, tcp)
}

// wantUnreach is icmp_send's error: TOS bits of the original with
// precedence 0xc0, no DF, ID 0 (the kernel picks one), TTL 64, and as much
// of the original as fits in 576 bytes.
func wantUnreach(t *testing.T, orig []byte, src net.IP, code uint8) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, TOS: orig[1]&0x1e | 0xc0, Protocol: layers.IPProtocolICMPv4,
		SrcIP: src, DstIP: net.IP(orig[12:16])}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, code)}
	q := orig
	if len(q) > 548 {
		q = q[:548]
	}
	return serialize(t, ip, icmp, gopacket.Payload(q))
}

var fwdReject = RejectPacket{Hook: matchers.HookForward, TTL: 64}

func TestBuildRejectTCP(t *testing.T) {
	payload := []byte("0123456789")
	cases := []struct {
		name string
		orig []byte
		want []byte
	}{
		// No ACK: seq 0, ACK of everything the segment occupied.
		{"syn", tcpSeg(t, "S", 1000, 0, nil, 0), wantRST(t, 0, 1001, true)},
		{"syn+data+fin", tcpSeg(t, "SF", 1000, 0, payload, 0), wantRST(t, 0, 1000+1+1+10, true)},
		{"bare data", tcpSeg(t, "P", 0xfffffffe, 0, payload, 0), wantRST(t, 0, 8, true)}, // wraps
		// ACK: the RST takes the acknowledged number and carries no ACK.
		{"ack+data", tcpSeg(t, "PA", 1000, 5555, payload, 0x10), wantRST(t, 5555, 0, false)},
		{"fin+ack", tcpSeg(t, "FA", 1000, 77, nil, 0), wantRST(t, 77, 0, false)},
	}
	buf := make([]byte, rejectBufBytes)
	for _, c := range cases {
		got, out := BuildReject(buf, c.orig, matchers.RejectTCPReset, fwdReject)
		if out != RejectSent || !bytes.Equal(got, c.want) {
			t.Errorf("%s: %v\n got %x\nwant %x", c.name, out, got, c.want)
		}
	}
}

func TestBuildRejectTCPNoReply(t *testing.T) {
	syn := tcpSeg(t, "S", 1000, 0, nil, 0)
	nonFirst := bytes.Clone(syn)
	binary.BigEndian.PutUint16(nonFirst[6:], 0x2001) // MF, offset 8 bytes
	firstFrag := bytes.Clone(syn)
	binary.BigEndian.PutUint16(firstFrag[6:], 0x2000) // MF, offset 0: answered
	badSum := bytes.Clone(syn)
	badSum[36] ^= 0xff
	truncated := syn[:30]
	binary.BigEndian.PutUint16(truncated[2:], 30)
	cases := []struct {
		name string
		orig []byte
		with matchers.RejectType
		p    RejectPacket
		want RejectOutcome
	}{
		{"rst", tcpSeg(t, "R", 1, 0, nil, 0), matchers.RejectTCPReset, fwdReject, RejectSkipRST},
		{"rst+ack", tcpSeg(t, "RA", 1, 2, nil, 0), matchers.RejectTCPReset, fwdReject, RejectSkipRST},
		{"non-first fragment", nonFirst, matchers.RejectTCPReset, fwdReject, RejectSkipFragment},
		{"non-first fragment, icmp", nonFirst, matchers.RejectPortUnreachable, fwdReject, RejectSkipFragment},
		{"first fragment", firstFrag, matchers.RejectTCPReset, fwdReject, RejectSent},
		{"truncated", truncated, matchers.RejectTCPReset, fwdReject, RejectSkipTruncated},
		{"udp", udpDgram(t, 0, nil), matchers.RejectTCPReset, fwdReject, RejectSkipNotTCP},
		{"bad checksum, unverified", badSum, matchers.RejectTCPReset, RejectPacket{TTL: 64, VerifyChecksum: true}, RejectSkipChecksum},
		{"bad checksum, verified by the kernel", badSum, matchers.RejectTCPReset, fwdReject, RejectSent},
		{"good checksum, unverified", syn, matchers.RejectTCPReset, RejectPacket{TTL: 64, VerifyChecksum: true}, RejectSent},
		{"broadcast", syn, matchers.RejectTCPReset, RejectPacket{TTL: 64, NonUnicastDst: true}, RejectSkipBroadcast},
	}
	buf := make([]byte, rejectBufBytes)
	for _, c := range cases {
		if _, out := BuildReject(buf, c.orig, c.with, c.p); out != c.want {
			t.Errorf("%s: %v, want %v", c.name, out, c.want)
		}
	}
}

func TestBuildRejectICMP(t *testing.T) {
	buf := make([]byte, rejectBufBytes)
	small := udpDgram(t, 0x1f, []byte("hello")) // TOS bits 0x1e and ECN 0x01
	big := udpDgram(t, 0, make([]byte, 1400))
	codes := map[matchers.RejectType]uint8{
		matchers.RejectNetUnreachable: 0, matchers.RejectHostUnreachable: 1, matchers.RejectProtoUnreachable: 2,
		matchers.RejectPortUnreachable: 3, matchers.RejectNetProhibited: 9, matchers.RejectHostProhibited: 10,
		matchers.RejectAdminProhibited: 13,
	}
	for with, code := range codes {
		// Forwarded: the routing table picks the source (0 here).
		got, out := BuildReject(buf, small, with, fwdReject)
		if want := wantUnreach(t, small, net.IPv4zero, code); out != RejectSent || !bytes.Equal(got, want) {
			t.Errorf("%v forwarded: %v\n got %x\nwant %x", with, out, got, want)
		}
	}
	// To a local address: the error comes from it.
	got, _ := BuildReject(buf, small, matchers.RejectPortUnreachable, RejectPacket{Hook: matchers.HookInput, LocalDst: true, TTL: 64})
	if want := wantUnreach(t, small, net.IPv4(10, 0, 2, 2), 3); !bytes.Equal(got, want) {
		t.Errorf("local:\n got %x\nwant %x", got, want)
	}
	// A long datagram is quoted up to 576 bytes in all.
	got, _ = BuildReject(buf, big, matchers.RejectPortUnreachable, fwdReject)
	if want := wantUnreach(t, big, net.IPv4zero, 3); len(got) != 576 || !bytes.Equal(got, want) {
		t.Errorf("long datagram: %d bytes, want 576 equal to gopacket's", len(got))
	}
}

func TestBuildRejectICMPNoReply(t *testing.T) {
	icmp := func(typ uint8) []byte {
		ip := &layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolICMPv4, SrcIP: net.IPv4(10, 0, 1, 2), DstIP: net.IPv4(10, 0, 2, 2)}
		return serialize(t, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0)}, gopacket.Payload(make([]byte, 28)))
	}
	badUDP := udpDgram(t, 0, []byte("x"))
	badUDP[27] ^= 0x55
	zeroSumUDP := bytes.Clone(badUDP)
	zeroSumUDP[26], zeroSumUDP[27] = 0, 0 // no checksum: never verified
	gre := serialize(t, &layers.IPv4{Version: 4, TTL: 63, Protocol: 47, SrcIP: net.IPv4(10, 0, 1, 2), DstIP: net.IPv4(10, 0, 2, 2)},
		gopacket.Payload([]byte{1, 2, 3, 4, 5}))
	proto99 := bytes.Clone(gre)
	proto99[9] = 99
	proto99 = serialize(t, &layers.IPv4{Version: 4, TTL: 63, Protocol: 99, SrcIP: net.IPv4(10, 0, 1, 2), DstIP: net.IPv4(10, 0, 2, 2)},
		gopacket.Payload([]byte{1, 2, 3, 4, 5}))
	verify := RejectPacket{Hook: matchers.HookInput, LocalDst: true, TTL: 64, VerifyChecksum: true}
	cases := []struct {
		name string
		orig []byte
		p    RejectPacket
		want RejectOutcome
	}{
		{"echo request", icmp(8), fwdReject, RejectSent},
		{"timestamp", icmp(13), fwdReject, RejectSent},
		{"address mask reply", icmp(18), fwdReject, RejectSent},
		{"dest unreachable", icmp(3), fwdReject, RejectSkipICMPError},
		{"time exceeded", icmp(11), fwdReject, RejectSkipICMPError},
		{"type 1 (unassigned: an error)", icmp(1), fwdReject, RejectSkipICMPError},
		{"type 9", icmp(9), fwdReject, RejectSkipICMPError},
		{"type 19 (unknown: an error)", icmp(19), fwdReject, RejectSkipICMPError},
		{"icmp without type", icmp(8)[:20], fwdReject, RejectSkipTruncated},
		{"broadcast", udpDgram(t, 0, nil), RejectPacket{TTL: 64, NonUnicastDst: true}, RejectSkipBroadcast},
		{"source 0.0.0.0", udpDgram(t, 0, nil), RejectPacket{TTL: 64, NonUnicastSrc: true}, RejectSkipSource},
		{"bad udp checksum", badUDP, verify, RejectSkipChecksum},
		{"bad udp checksum, verified by the kernel", badUDP, fwdReject, RejectSent},
		{"udp without checksum", zeroSumUDP, verify, RejectSent},
		{"gre (not verified)", gre, verify, RejectSent},
		{"protocol 99 (verified: garbage fails)", proto99, verify, RejectSkipChecksum},
		{"good udp checksum", udpDgram(t, 0, []byte("x")), verify, RejectSent},
	}
	buf := make([]byte, rejectBufBytes)
	for _, c := range cases {
		if _, out := BuildReject(buf, c.orig, matchers.RejectPortUnreachable, c.p); out != c.want {
			t.Errorf("%s: %v, want %v", c.name, out, c.want)
		}
	}
}

func TestICMPLimiter(t *testing.T) {
	cfg := defaultRejectSysctls // ratelimit 1000 ms, mask 0x1818, 1000/s burst 50
	l := newICMPLimiter(cfg)
	now := time.Unix(1000, 0)
	a, b := [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}
	n := 0
	for i := 0; i < 20; i++ {
		if l.allow(3, a, false, now) {
			n++
		}
	}
	if n != xrlimBurst {
		t.Errorf("%d errors to one destination at once, want the burst of %d", n, xrlimBurst)
	}
	if !l.allow(3, b, false, now) {
		t.Error("another destination has its own bucket")
	}
	if l.allow(3, a, false, now.Add(999*time.Millisecond)) {
		t.Error("a token before icmp_ratelimit elapsed")
	}
	if !l.allow(3, a, false, now.Add(1000*time.Millisecond)) || l.allow(3, a, false, now.Add(1000*time.Millisecond)) {
		t.Error("want exactly one error after icmp_ratelimit")
	}
	// Types outside icmp_ratemask (echo reply) and local destinations are
	// not limited.
	for i := 0; i < 100; i++ {
		if !l.allow(0, a, false, now) || !l.allow(3, a, true, now) {
			t.Fatal("an unlimited error was limited")
		}
	}
	// The global bucket: icmp_msgs_burst errors at once over many
	// destinations.
	cfg.msgsBurst, cfg.msgsPerSec = 10, 10
	l = newICMPLimiter(cfg)
	n = 0
	for i := 0; i < 100; i++ {
		if l.allow(3, [4]byte{10, 1, byte(i), 1}, false, now) {
			n++
		}
	}
	if n != 10 {
		t.Errorf("global limit let %d errors through, want 10", n)
	}
	// icmp_ratelimit 0: no per-destination limit.
	cfg = defaultRejectSysctls
	cfg.ratelimit = 0
	l = newICMPLimiter(cfg)
	for i := 0; i < 40; i++ {
		if !l.allow(3, a, false, now) {
			t.Fatalf("error %d limited with icmp_ratelimit 0", i)
		}
	}
}

func TestLocalAddrs(t *testing.T) {
	la := &localAddrs{local: []uint32{0x0a000101}, bcast: []uint32{0x0a0001ff}}
	for _, c := range []struct {
		a            uint32
		local, bcast bool
	}{
		{0x0a000101, true, false}, {0x7f000001, true, false}, {0x7f123456, true, false},
		{0x0a0001ff, false, true}, {0xffffffff, false, true}, {0xe0000001, false, true}, {0xefffffff, false, true},
		{0x0a000102, false, false},
	} {
		if la.isLocal(c.a) != c.local || la.isBroadcast(c.a) != c.bcast {
			t.Errorf("%08x: local %v broadcast %v", c.a, la.isLocal(c.a), la.isBroadcast(c.a))
		}
	}
	if !la.nonUnicastSrc(0) || la.nonUnicastSrc(0x0a000102) {
		t.Error("nonUnicastSrc")
	}
}

func TestRejecterOutcomes(t *testing.T) {
	r := newRejecter(-1)
	var sent [][]byte
	var oobs [][]byte
	r.write = func(reply, oob []byte, to *unix.SockaddrInet4) error {
		if !bytes.Equal(to.Addr[:], reply[16:20]) {
			t.Errorf("sent to %v, reply for %v", to.Addr, reply[16:20])
		}
		sent = append(sent, bytes.Clone(reply))
		oobs = append(oobs, bytes.Clone(oob))
		return nil
	}
	r.addrs.Store(&localAddrs{local: []uint32{0x0a000201}, bcast: []uint32{0x0a0002ff}})
	var sc rejectScratch
	syn := tcpSeg(t, "S", 1, 0, nil, 0)
	if out := r.reject(&sc, syn, matchers.RejectTCPReset, matchers.HookForward, 0, 0); out != RejectSent {
		t.Errorf("RST: %v", out)
	}
	// A packet whose checksum the kernel did not verify is checked.
	bad := bytes.Clone(syn)
	bad[30] ^= 1
	if out := r.reject(&sc, bad, matchers.RejectTCPReset, matchers.HookForward, 0, skbCsumNotVerified); out != RejectSkipChecksum {
		t.Errorf("bad checksum: %v", out)
	}
	// ... but not one still to be computed (local output).
	if out := r.reject(&sc, bad, matchers.RejectTCPReset, matchers.HookOutput, 0, skbCsumNotVerified|skbCsumNotReady); out != RejectSent {
		t.Errorf("checksum not ready: %v", out)
	}
	// At OUTPUT, a destination that is a local address makes it the
	// error's source; FORWARD never does.
	u := udpDgram(t, 0, nil)
	copy(u[16:20], []byte{10, 0, 2, 1})
	r.reject(&sc, u, matchers.RejectPortUnreachable, matchers.HookOutput, 0, 0)
	if last := sent[len(sent)-1]; !bytes.Equal(last[12:16], []byte{10, 0, 2, 1}) {
		t.Errorf("local destination: error from %v", last[12:16])
	}
	r.reject(&sc, u, matchers.RejectPortUnreachable, matchers.HookForward, 0, 0)
	if last := sent[len(sent)-1]; !bytes.Equal(last[12:16], []byte{0, 0, 0, 0}) {
		t.Errorf("forwarded: error from %v", last[12:16])
	}
	copy(u[16:20], []byte{10, 0, 2, 255})
	if out := r.reject(&sc, u, matchers.RejectPortUnreachable, matchers.HookInput, 0, 0); out != RejectSkipBroadcast {
		t.Errorf("subnet broadcast: %v", out)
	}
	// fwmark_reflect: the reply carries the mark in an SO_MARK message.
	s := *r.sysctls.Load()
	s.reflect = true
	r.sysctls.Store(&s)
	r.reject(&sc, syn, matchers.RejectTCPReset, matchers.HookForward, 0x77, 0)
	if o := oobs[len(oobs)-1]; len(o) != unix.CmsgSpace(4) || binary.NativeEndian.Uint32(o[unix.CmsgLen(0):]) != 0x77 {
		t.Errorf("SO_MARK control message %x", o)
	}
	if len(oobs[0]) != 0 {
		t.Error("a control message without fwmark_reflect")
	}
	r.write = func([]byte, []byte, *unix.SockaddrInet4) error { return unix.EPERM }
	if out := r.reject(&sc, syn, matchers.RejectTCPReset, matchers.HookForward, 0, 0); out != RejectFailed || r.lastErr.Load() == nil {
		t.Errorf("failed send: %v", out)
	}
	snap := r.snapshot()
	if snap["sent"] != 5 || snap["bad_checksum"] != 1 || snap["broadcast"] != 1 || snap["failed"] != 1 {
		t.Errorf("outcomes %v", snap)
	}
}

func TestReadRejectSysctls(t *testing.T) {
	dir := t.TempDir()
	for name, v := range map[string]string{"ip_default_ttl": "33\n", "fwmark_reflect": "1\n", "icmp_ratelimit": "250\n"} {
		writeFileT(t, dir+"/"+name, v)
	}
	s := readRejectSysctls(dir)
	if s.ttl != 33 || !s.reflect || s.ratelimit != 250 || s.ratemask != 6168 || s.msgsPerSec != 1000 {
		t.Errorf("%+v", s)
	}
}

func BenchmarkReject(b *testing.B) {
	r := newRejecter(-1)
	r.write = func([]byte, []byte, *unix.SockaddrInet4) error { return nil }
	var sc rejectScratch
	syn := tcpSeg(b, "S", 1, 0, nil, 0)
	u := udpDgram(b, 0, make([]byte, 100))
	cfg := defaultRejectSysctls
	cfg.ratelimit = 0
	r.lim.setConfig(cfg)
	r.lim.global.SetLimit(1e12)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i&1 == 0 {
			r.reject(&sc, syn, matchers.RejectTCPReset, matchers.HookForward, 0, skbCsumNotVerified)
		} else {
			r.reject(&sc, u, matchers.RejectPortUnreachable, matchers.HookForward, 0, skbCsumNotVerified)
		}
	}
}

func writeFileT(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
