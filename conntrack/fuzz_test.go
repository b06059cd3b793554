package conntrack

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/qtables/qtables/packet"
)

// The fuzz input is a program of packets, so that the fuzzer can reach deep
// TCP states on one connection instead of scattering random tuples. Each
// record is a kind byte, a length byte and that many argument bytes:
//
//	kind%6 0, 1: TCP client->server, server->client; args: flags, then
//	             seq and ack offsets (2 bytes each, from a running base),
//	             window (2 bytes), then raw option bytes
//	kind%6 2, 3: UDP either way; args: payload
//	kind%6 4:    ICMP; args: type, code, then the message body (quoted
//	             datagram for errors, as given, garbage included)
//	kind%6 5:    a raw IPv4 datagram from the arguments, as given
//
// kind/6%2 picks the drop path (Discard instead of Confirm); kind/12
// advances the clock by that many seconds.

var (
	fzClient = [4]byte{192, 0, 2, 1}
	fzServer = [4]byte{198, 51, 100, 2}
)

func ipv4Datagram(src, dst [4]byte, proto uint8, l4 []byte) []byte {
	b := make([]byte, 20+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	copy(b[20:], l4)
	return b
}

func fuzzTCP(toServer bool, args []byte, base uint32) []byte {
	get := func(i int) byte {
		if i < len(args) {
			return args[i]
		}
		return 0
	}
	opts := []byte{}
	if len(args) > 7 {
		opts = args[7:min(len(args), 47)]
	}
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	h := make([]byte, 20+len(opts))
	sp, dp := uint16(40000), uint16(80)
	if !toServer {
		sp, dp = dp, sp
	}
	binary.BigEndian.PutUint16(h[0:2], sp)
	binary.BigEndian.PutUint16(h[2:4], dp)
	binary.BigEndian.PutUint32(h[4:8], base+uint32(get(1))<<8|uint32(get(2)))
	binary.BigEndian.PutUint32(h[8:12], base+uint32(get(3))<<8|uint32(get(4)))
	h[12] = byte((20+len(opts))/4) << 4
	h[13] = get(0)
	binary.BigEndian.PutUint16(h[14:16], uint16(get(5))<<8|uint16(get(6)))
	copy(h[20:], opts)
	if toServer {
		return ipv4Datagram(fzClient, fzServer, 6, h)
	}
	return ipv4Datagram(fzServer, fzClient, 6, h)
}

func FuzzTrack(f *testing.F) {
	rec := func(kind byte, args ...byte) []byte { return append([]byte{kind, byte(len(args))}, args...) }
	cat := func(rs ...[]byte) []byte {
		var b []byte
		for _, r := range rs {
			b = append(b, r...)
		}
		return b
	}
	// A handshake, data and close (flags S, SA, A, PA, FA ...).
	f.Add(cat(rec(0, 0x02, 0, 0, 0, 0, 0xff, 0xff), rec(1, 0x12, 0, 10, 0, 1, 0xff, 0xff),
		rec(0, 0x10, 0, 1, 0, 11, 0xff, 0xff), rec(0, 0x18, 0, 1, 0, 11, 0xff, 0xff),
		rec(1, 0x11, 0, 11, 0, 1, 0xff, 0xff), rec(0, 0x10, 0, 1, 0, 12, 0xff, 0xff)))
	// A SYN with window scale and SACK permitted, a SYN/ACK with SACK blocks.
	f.Add(cat(rec(0, 0x02, 0, 0, 0, 0, 0xff, 0xff, 3, 3, 7, 4, 2, 1, 1),
		rec(1, 0x12, 0, 10, 0, 1, 0xff, 0xff, 3, 3, 7, 5, 10, 0, 0, 0, 1, 0, 0, 0, 9)))
	// Malformed options and impossible flags.
	f.Add(cat(rec(0, 0x02, 0, 0, 0, 0, 1, 0, 3, 200, 7), rec(0, 0x03), rec(0, 0xff), rec(0, 0x00)))
	// UDP both ways, and an ICMP error quoting the first datagram.
	udp := []byte{0x13, 0x88, 0, 53, 0, 9, 0, 0, 'x'}
	quoted := ipv4Datagram(fzClient, fzServer, 17, udp)
	f.Add(cat(rec(2, 'x'), rec(3, 'y'), rec(4, append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, quoted...)...)))
	// ICMP echo and an error quoting garbage.
	f.Add(cat(rec(4, 8, 0, 0, 0, 0, 1, 0, 1), rec(4, 3, 1, 0, 0, 0, 0, 0, 0, 0x45, 0xff, 0xff)))
	// A raw datagram.
	f.Add(cat(rec(5, ipv4Datagram(fzClient, fzServer, 47, []byte{0, 0, 8, 0})...)))

	f.Fuzz(func(t *testing.T, prog []byte) {
		tab := New(Config{Shards: 2, MaxEntries: 8})
		dec, err := packet.NewDecoder(packet.LinkTypeIPv4)
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		var v packet.View
		base := uint32(0x7fff0000)
		for len(prog) >= 2 {
			kind, n := prog[0], int(prog[1])
			args := prog[2:min(len(prog), 2+n)]
			prog = prog[min(len(prog), 2+n):]
			now = now.Add(time.Duration(kind/12) * time.Second)
			var frame []byte
			switch kind % 6 {
			case 0, 1:
				frame = fuzzTCP(kind%6 == 0, args, base)
			case 2:
				frame = ipv4Datagram(fzClient, fzServer, 17, append([]byte{0x13, 0x88, 0, 53, 0, byte(8 + len(args)), 0, 0}, args...))
			case 3:
				frame = ipv4Datagram(fzServer, fzClient, 17, append([]byte{0, 53, 0x13, 0x88, 0, byte(8 + len(args)), 0, 0}, args...))
			case 4:
				icmp := append([]byte(nil), args...)
				for len(icmp) < 8 {
					icmp = append(icmp, 0)
				}
				frame = ipv4Datagram(fzServer, fzClient, 1, icmp)
			case 5:
				frame = args
			}
			dec.Decode(frame, &v)
			r := tab.Track(&v, now)
			checkFuzzResult(t, &v, &r)
			if (kind/6)%2 == 1 {
				r.Discard()
			} else {
				r.Confirm(now)
			}
		}
		checkInvariants(t, tab)
		tab.Sweep(now.Add(10 * 24 * time.Hour))
		if tab.Len() != 0 {
			t.Fatalf("%d entries survived every timeout", tab.Len())
		}
	})
}

func checkFuzzResult(t *testing.T, v *packet.View, r *Result) {
	t.Helper()
	if r.Info == CtInvalid && r.HasEntry() {
		t.Fatalf("INVALID with an entry: %v", r)
	}
	if r.Info != CtInvalid && !r.HasEntry() {
		t.Fatalf("%v without an entry", r.Info)
	}
	if r.Drop && r.Info != CtInvalid {
		t.Fatalf("dropped packet with state %v", r.Info)
	}
	if r.HasEntry() {
		if inv, ok := r.Entry.Orig().Invert(); !ok || inv != r.Entry.Reply() {
			t.Fatalf("entry tuples inconsistent: %s", r.Entry.Format(t0))
		}
	}
	if v.Class != packet.ClassOK || len(v.L4) < 8 {
		return
	}
	switch v.Proto {
	case 6:
		if len(v.L4) >= 20 && !tcpValidFlags[v.L4[13]&^(thPSH|thECE|thCWR)&0x3f] && r.Info != CtInvalid {
			t.Fatalf("impossible TCP flags %#x got %v", v.L4[13], r.Info)
		}
	case 1:
		typ := v.L4[0]
		if icmpIsError(typ) && r.Info != CtInvalid && r.Info != CtRelated {
			t.Fatalf("ICMP error type %d got %v", typ, r.Info)
		}
		if r.Info == CtRelated && !icmpIsError(typ) {
			t.Fatalf("ICMP type %d RELATED", typ)
		}
		if typ > icmpMaxType && r.Info != CtInvalid {
			t.Fatalf("unknown ICMP type %d got %v", typ, r.Info)
		}
	}
}
