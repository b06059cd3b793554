package conformance

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// StatePacket is one packet of a stateful case: the datagram, the side it
// is injected on, and what it is for failure reports.
type StatePacket struct {
	Packet
	// FromSink: injected from SINK (arriving on b1) rather than from SRC.
	FromSink bool
	Note     string
}

// Frame returns the packet's Ethernet frame, addressed to FW's interface
// on its side.
func (p *StatePacket) Frame(t *StateTopology) ([]byte, error) {
	if p.FromSink {
		return p.Packet.Frame(t.SinkMAC, t.FWOutMAC)
	}
	return p.Packet.Frame(t.SrcMAC, t.FWMAC)
}

// TCP option kinds the generator writes.
const (
	tcpOptNOP    = 1
	tcpOptMSS    = 2
	tcpOptWScale = 3
	tcpOptSACKOK = 4
)

// tcpSegment encodes a TCP header with the given sequence numbers, flags,
// window and raw options (padded with NOPs to a multiple of 4), then
// payload, with a correct checksum.
func tcpSegment(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags uint8, win uint16, opts []byte, payload []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, tcpOptNOP)
	}
	h := make([]byte, 20+len(opts)+len(payload))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], seq)
	binary.BigEndian.PutUint32(h[8:], ack)
	h[12] = byte((20+len(opts))/4) << 4
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], win)
	copy(h[20:], opts)
	copy(h[20+len(opts):], payload)
	binary.BigEndian.PutUint16(h[16:], l4Checksum(src, dst, 6, h))
	return h
}

// udpDatagram encodes a UDP header and payload with a correct checksum.
func udpDatagram(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(len(h)))
	copy(h[8:], payload)
	sum := l4Checksum(src, dst, 17, h)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(h[6:], sum)
	return h
}

// icmpMessage encodes an ICMP header (type, code, checksum, the 4 bytes
// of rest) and payload.
func icmpMessage(typ, code uint8, rest uint32, payload []byte) []byte {
	h := make([]byte, 8+len(payload))
	h[0], h[1] = typ, code
	binary.BigEndian.PutUint32(h[4:], rest)
	copy(h[8:], payload)
	binary.BigEndian.PutUint16(h[2:], ^onesSum(0, h))
	return h
}

// l4Checksum is the TCP/UDP checksum over the IPv4 pseudo header and b
// (whose checksum field must be zero).
func l4Checksum(src, dst netip.Addr, proto uint8, b []byte) uint16 {
	var ph [12]byte
	s, d := src.As4(), dst.As4()
	copy(ph[0:], s[:])
	copy(ph[4:], d[:])
	ph[9] = proto
	binary.BigEndian.PutUint16(ph[10:], uint16(len(b)))
	return ^onesSum(onesSum(0, ph[:]), b)
}

func onesSum(sum uint16, b []byte) uint16 {
	s := uint32(sum)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// ipDatagram returns p's IPv4 datagram (header and L4), as an ICMP error
// quotes it.
func ipDatagram(p *Packet) ([]byte, error) {
	f, err := p.Frame(net.HardwareAddr{0, 0, 0, 0, 0, 1}, net.HardwareAddr{0, 0, 0, 0, 0, 2})
	if err != nil {
		return nil, err
	}
	return f[14 : 14+p.IPLen()], nil
}
