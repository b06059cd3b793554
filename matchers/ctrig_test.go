package matchers

import (
	"net"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/packet"
)

// ctRig drives a conntrack.Table the way the engine does for each packet
// (Track before the rules, Confirm or Discard after) and hands the
// stateful matches a Context. Packets are encoded with gopacket and
// decoded with packet.Decoder, independently of the code under test.
type ctRig struct {
	tb  testing.TB
	tab *conntrack.Table
	now time.Time
	res conntrack.Result
	v   packet.View
	dec *packet.Decoder
	c   Context
}

func newCtRig(tb testing.TB) *ctRig {
	d, err := packet.NewDecoder(packet.LinkTypeIPv4)
	if err != nil {
		tb.Fatal(err)
	}
	return &ctRig{tb: tb, tab: conntrack.New(conntrack.Config{Shards: 4}), dec: d,
		now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

// track advances the clock by 10 ms (beyond a connlimit jiffy), tracks
// the datagram and returns the Context the rules see.
func (r *ctRig) track(datagram []byte) *Context {
	r.tb.Helper()
	r.now = r.now.Add(10 * time.Millisecond)
	r.v.Reset()
	r.dec.Decode(datagram, &r.v)
	if r.v.Class != packet.ClassOK {
		r.tb.Fatalf("test datagram decodes as %v", r.v.Class)
	}
	r.v.Timestamp = r.now
	r.tab.TrackInto(&r.res, &r.v, r.now)
	r.c.Reset()
	r.c.Pkt, r.c.Hook, r.c.Table, r.c.Now = &r.v, HookForward, "filter", r.now
	r.c.SetConntrack(r.tab, &r.res)
	return &r.c
}

// accept and drop end the packet's traversal as the engine does.
func (r *ctRig) accept() {
	if !r.res.Confirm(r.now) {
		r.tb.Fatal("confirm failed")
	}
}

func (r *ctRig) drop() { r.res.Discard() }

// pass tracks and accepts a datagram.
func (r *ctRig) pass(datagram []byte) *Context {
	c := r.track(datagram)
	r.accept()
	return c
}

var (
	ipC  = net.IP{10, 1, 0, 1}
	ipC2 = net.IP{10, 1, 0, 2}
	ipS  = net.IP{198, 51, 100, 7}
	ipS2 = net.IP{198, 51, 100, 8}
	ipR  = net.IP{192, 0, 2, 254}
)

func encode(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func ip4(proto layers.IPProtocol, src, dst net.IP) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src, DstIP: dst}
}

// tcpSeg encodes a TCP segment; flags are letters S A F R P.
func tcpSeg(tb testing.TB, src, dst net.IP, sport, dport uint16, flags string, seq, ack uint32, data int) []byte {
	tb.Helper()
	ip := ip4(layers.IPProtocolTCP, src, dst)
	t := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Ack: ack, Window: 64240}
	for _, f := range flags {
		switch f {
		case 'S':
			t.SYN = true
		case 'A':
			t.ACK = true
		case 'F':
			t.FIN = true
		case 'R':
			t.RST = true
		case 'P':
			t.PSH = true
		}
	}
	if err := t.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return encode(tb, ip, t, gopacket.Payload(make([]byte, data)))
}

func udpDgram(tb testing.TB, src, dst net.IP, sport, dport uint16, data int) []byte {
	tb.Helper()
	ip := ip4(layers.IPProtocolUDP, src, dst)
	u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := u.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return encode(tb, ip, u, gopacket.Payload(make([]byte, data)))
}

func icmpMsg(tb testing.TB, src, dst net.IP, typ, code uint8, id uint16, payload []byte) []byte {
	tb.Helper()
	return encode(tb, ip4(layers.IPProtocolICMPv4, src, dst),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: id}, gopacket.Payload(payload))
}

// handshake passes a TCP three-way handshake from src:sport to dst:dport
// (client ISN 1000, server ISN 5000).
func (r *ctRig) handshake(src, dst net.IP, sport, dport uint16) {
	r.pass(tcpSeg(r.tb, src, dst, sport, dport, "S", 1000, 0, 0))
	r.pass(tcpSeg(r.tb, dst, src, dport, sport, "SA", 5000, 1001, 0))
	r.pass(tcpSeg(r.tb, src, dst, sport, dport, "A", 1001, 5001, 0))
}

func TestContextConntrackConsistency(t *testing.T) {
	r := newCtRig(t)
	c := r.track(udpDgram(t, ipC, ipS, 1000, 53, 10))
	if !c.HasCt || c.CtMark != 0 || c.Ct == nil || c.CtTable != r.tab {
		t.Fatalf("tracked packet: HasCt %v CtMark %d Ct %v", c.HasCt, c.CtMark, c.Ct)
	}
	if info, dir, e := c.CtState(); info != conntrack.CtNew || dir != conntrack.DirOriginal || e == nil {
		t.Fatalf("CtState = %v %v %v", info, dir, e)
	}
	r.accept()
	// An INVALID packet: no connection.
	c = r.track(tcpSeg(t, ipC, ipS, 1, 2, "F", 1, 0, 0))
	if c.HasCt || c.Ct.HasEntry() {
		t.Fatal("a stray FIN has a connection")
	}
	if info, _, e := c.CtState(); info != conntrack.CtInvalid || e != nil {
		t.Fatalf("stray FIN: CtState = %v %v", info, e)
	}
	r.drop()
	// Untracked (a caller's NOTRACK) and untracked by anyone.
	var ctx Context
	if info, _, _ := ctx.CtState(); info != conntrack.CtInvalid {
		t.Fatalf("nil Ct: %v", info)
	}
	ctx.SetConntrack(nil, &conntrack.Result{Info: conntrack.CtUntracked})
	if info, _, e := ctx.CtState(); info != conntrack.CtUntracked || e != nil || ctx.HasCt {
		t.Fatalf("untracked: %v %v %v", info, e, ctx.HasCt)
	}
}

// BenchmarkStateful measures the stateful matches and CONNMARK on a
// packet of an established connection: none may allocate.
func BenchmarkStateful(b *testing.B) {
	r := newCtRig(b)
	r.handshake(ipC, ipS, 1234, 80)
	c := r.track(tcpSeg(b, ipC, ipS, 1234, 80, "A", 1001, 5001, 0))
	r.accept()
	mk := func(name, opts string) Match { return mustBuild(b, name, ruleTCP, opts) }
	ms := []struct {
		name string
		m    Match
	}{
		{"state", mk("state", "--state ESTABLISHED,RELATED")},
		{"conntrack", mk("conntrack", "--ctstate ESTABLISHED --ctproto 6 --ctorigsrc 10.0.0.0/8 --ctorigdstport 80 --ctstatus ASSURED --ctexpire 100:500000 --ctdir ORIGINAL")},
		{"connmark", mk("connmark", "--mark 0x1/0xff")},
		{"connbytes", mk("connbytes", "--connbytes 10: --connbytes-dir both --connbytes-mode avgpkt")},
		{"connlimit", mk("connlimit", "--connlimit-above 10 --connlimit-mask 24")},
	}
	for _, x := range ms {
		b.Run(x.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				x.m.Match(c)
			}
		})
	}
	for _, opts := range []string{"--set-mark 0x5/0xff", "--save-mark --left-shift-mark 1", "--restore-mark --mask 0xf"} {
		tg, err := buildTarget("CONNMARK", ruleAny, splitArgs(opts)...)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("CONNMARK "+opts, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tg.Apply(c)
			}
		})
	}
}

// TestStatefulNoAllocs pins BenchmarkStateful's 0 allocs/op in the test
// suite.
func TestStatefulNoAllocs(t *testing.T) {
	r := newCtRig(t)
	r.handshake(ipC, ipS, 1234, 80)
	c := r.track(tcpSeg(t, ipC, ipS, 1234, 80, "A", 1001, 5001, 0))
	r.accept()
	for _, x := range []struct{ name, opts string }{
		{"state", "--state ESTABLISHED"},
		{"conntrack", "--ctstate ESTABLISHED --ctorigsrc 10.0.0.0/8 --ctexpire 100:500000"},
		{"connmark", "--mark 0x1/0xff"},
		{"connbytes", "--connbytes 10: --connbytes-dir both --connbytes-mode bytes"},
		{"connlimit", "--connlimit-above 10"},
	} {
		m := mustBuild(t, x.name, ruleTCP, x.opts)
		m.Match(c) // the first evaluation may create connlimit's list
		if n := testing.AllocsPerRun(100, func() { m.Match(c) }); n != 0 {
			t.Errorf("-m %s %s: %v allocs per packet", x.name, x.opts, n)
		}
	}
	tg, _ := buildTarget("CONNMARK", ruleAny, "--save-mark", "--right-shift-mark", "2")
	if n := testing.AllocsPerRun(100, func() { tg.Apply(c) }); n != 0 {
		t.Errorf("CONNMARK: %v allocs per packet", n)
	}
}
