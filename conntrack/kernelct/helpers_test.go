package kernelct

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/qtables/qtables/packet"
)

// ipv4 returns an IPv4 datagram (no options, valid header checksum)
// carrying l4.
func ipv4(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	b := make([]byte, 20+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	copy(b[20:], l4)
	return b
}

func udpHdr(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	return b
}

func tcpHdr(sport, dport uint16, flags uint8) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	return b
}

func icmpHdr(typ, code uint8, id, seq uint16) []byte {
	b := make([]byte, 8)
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	return b
}

// view decodes a raw IPv4 datagram with the packet package's decoder.
func view(t testing.TB, datagram []byte) *packet.View {
	t.Helper()
	d, err := packet.NewDecoder(packet.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	v := new(packet.View)
	d.Decode(datagram, v)
	return v
}
