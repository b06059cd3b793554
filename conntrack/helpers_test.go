package conntrack

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/qtables/qtables/packet"
)

// Packets for the tests are built with gopacket's layers and decoded with
// packet.Decoder, so the bytes come from an independent encoder.

var (
	ipClient = net.IP{192, 0, 2, 1}
	ipServer = net.IP{198, 51, 100, 2}
	ipRouter = net.IP{203, 0, 113, 254}
	ipOther  = net.IP{203, 0, 113, 9}
)

var t0 = time.Date(2025, 1, 6, 10, 0, 0, 0, time.UTC)

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func ipv4(proto layers.IPProtocol, src, dst net.IP) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 1, Protocol: proto, SrcIP: src, DstIP: dst}
}

// seg describes a TCP segment.
type seg struct {
	src, dst     net.IP
	sport, dport uint16
	flags        string // letters: S A F R P U E C
	seq, ack     uint32
	win          uint16
	data         int // payload length
	opts         []layers.TCPOption
}

func tcpFrame(tb testing.TB, s seg) []byte {
	tb.Helper()
	ip := ipv4(layers.IPProtocolTCP, s.src, s.dst)
	win := s.win
	if win == 0 {
		win = 64240
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport),
		Seq: s.seq, Ack: s.ack, Window: win, Options: s.opts}
	for _, f := range s.flags {
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
		case 'U':
			tcp.URG = true
		case 'E':
			tcp.ECE = true
		case 'C':
			tcp.CWR = true
		case '0': // zero window
			tcp.Window = 0
		default:
			tb.Fatalf("bad flag %q", f)
		}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return serialize(tb, ip, tcp, gopacket.Payload(make([]byte, s.data)))
}

func udpFrame(tb testing.TB, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	tb.Helper()
	ip := ipv4(layers.IPProtocolUDP, src, dst)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return serialize(tb, ip, udp, gopacket.Payload(payload))
}

func icmpFrame(tb testing.TB, src, dst net.IP, typ, code uint8, id, seq uint16, payload []byte) []byte {
	tb.Helper()
	ip := ipv4(layers.IPProtocolICMPv4, src, dst)
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: id, Seq: seq}
	return serialize(tb, ip, ic, gopacket.Payload(payload))
}

// icmpErrorFrame builds an ICMP error quoting the first bytes of quoted (an
// IP datagram), as routers do (IP header + 8 bytes).
func icmpErrorFrame(tb testing.TB, src, dst net.IP, typ, code uint8, quoted []byte, n int) []byte {
	tb.Helper()
	if n > len(quoted) {
		n = len(quoted)
	}
	return icmpFrame(tb, src, dst, typ, code, 0, 0, quoted[:n])
}

func rawFrame(tb testing.TB, proto layers.IPProtocol, src, dst net.IP, payload []byte) []byte {
	tb.Helper()
	return serialize(tb, ipv4(proto, src, dst), gopacket.Payload(payload))
}

func decode(tb testing.TB, frame []byte) *packet.View {
	tb.Helper()
	d, err := packet.NewDecoder(packet.LinkTypeIPv4)
	if err != nil {
		tb.Fatal(err)
	}
	v := new(packet.View)
	d.Decode(frame, v)
	return v
}

// harness drives a table with a fake clock; send tracks a frame and, like
// an accepting rule set, confirms a new connection.
type harness struct {
	tb  testing.TB
	tab *Table
	now time.Time
	// fast skips the per-packet invariant check (for tests with many
	// packets, which check once at the end).
	fast bool
}

func newHarness(tb testing.TB, cfg Config) *harness {
	return &harness{tb: tb, tab: New(cfg), now: t0}
}

func (h *harness) advance(d time.Duration) { h.now = h.now.Add(d) }

func (h *harness) send(frame []byte) Result {
	h.tb.Helper()
	r := h.tab.Track(decode(h.tb, frame), h.now)
	if r.HasEntry() && !r.Entry.Confirmed() {
		if !r.Confirm(h.now) {
			h.tb.Fatalf("confirm failed")
		}
	}
	if !h.fast {
		checkInvariants(h.tb, h.tab)
	}
	return r
}

// checkInvariants verifies the table's internal consistency: every index
// slot names an in-use, confirmed entry reachable from its home position,
// every confirmed entry is indexed once, and the count matches the slabs.
func checkInvariants(tb testing.TB, t *Table) {
	tb.Helper()
	total := 0
	for si := range t.shards {
		s := &t.shards[si]
		s.mu.Lock()
		indexed := map[uint32]bool{}
		filled := 0
		mask := len(s.slots) - 1
		for pos, sl := range s.slots {
			if sl == 0 {
				continue
			}
			filled++
			idx := sl.idx() - 1
			if idx >= s.used {
				tb.Fatalf("shard %d slot %d: index %d beyond slab %d", si, pos, idx, s.used)
			}
			e := s.flow(idx)
			if !e.inUse() || e.status&StatusConfirmed == 0 {
				tb.Fatalf("shard %d slot %d: entry %d not a confirmed entry", si, pos, idx)
			}
			h := t.seed.hash(&e.orig)
			if uint32(h) != sl.hash() {
				tb.Fatalf("shard %d slot %d: stored hash mismatch", si, pos)
			}
			if _, got := t.shardFor(h); int(got) != si {
				tb.Fatalf("entry in shard %d hashes to %d", si, got)
			}
			// No empty slot between home and pos.
			for p := int(sl.hash()) & mask; p != pos; p = (p + 1) & mask {
				if s.slots[p] == 0 {
					tb.Fatalf("shard %d slot %d unreachable from home", si, pos)
				}
			}
			if indexed[idx] {
				tb.Fatalf("entry %d indexed twice", idx)
			}
			indexed[idx] = true
		}
		if filled != s.filled {
			tb.Fatalf("shard %d: filled %d, counted %d", si, s.filled, filled)
		}
		free := map[uint32]bool{}
		for f := s.free; f != 0; f = s.flow(f - 1).next {
			if free[f-1] || s.flow(f-1).inUse() {
				tb.Fatalf("shard %d: bad free list at %d", si, f-1)
			}
			free[f-1] = true
		}
		for idx := uint32(0); idx < s.used; idx++ {
			e := s.flow(idx)
			if !e.inUse() {
				if !free[idx] {
					tb.Fatalf("shard %d: entry %d neither used nor free", si, idx)
				}
				continue
			}
			total++
			if e.status&StatusConfirmed != 0 && !indexed[idx] {
				tb.Fatalf("shard %d: confirmed entry %d not indexed", si, idx)
			}
			if _, ok := e.orig.Invert(); !ok {
				tb.Fatalf("entry %d: original tuple %v has no inverse", idx, e.orig)
			}
		}
		s.mu.Unlock()
	}
	if int64(total) != t.count.Load() {
		tb.Fatalf("count %d, entries in use %d", t.count.Load(), total)
	}
}

func addr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}

func (r Result) String() string {
	return fmt.Sprintf("%v/%v reason=%q state=%v status=%#x", r.Info, r.Dir, r.Reason, r.Entry.TCPState(), uint32(r.Entry.Status()))
}
