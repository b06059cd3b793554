package conformance

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Packet describes one generated IPv4 datagram. Frame turns it into the
// Ethernet frame that is both injected into the kernel and written to the
// pcap file, so the two sides of the comparison see the same bytes.
type Packet struct {
	Src, Dst netip.Addr
	Proto    uint8
	TTL      uint8
	TOS      uint8
	ID       uint16
	// DF, MF and Evil are the IPv4 flag bits (Evil is the reserved bit).
	DF, MF, Evil bool
	// FragOff is the fragment offset in 8-byte units; non-zero makes L4 the
	// bytes of a later fragment (no transport header).
	FragOff uint16
	// Options are raw IPv4 option bytes; Frame pads them with zero (EOL)
	// bytes to a multiple of four.
	Options []byte
	// L4 is everything after the IP header: a transport header and payload,
	// a truncated header, or a later fragment's data.
	L4 []byte
	// Trailer is appended to the frame after the datagram (link padding the
	// kernel trims using the IP total length).
	Trailer []byte
}

// IPLen returns the datagram length (the IPv4 total length field): what the
// kernel adds to byte counters.
func (p *Packet) IPLen() int {
	return 20 + (len(p.Options)+3)/4*4 + len(p.L4)
}

// Frame serializes the packet behind an Ethernet header from src to dst,
// with a correct IPv4 header checksum. After the datagram come the
// Trailer and, for frames shorter than the Ethernet minimum of 60 bytes,
// zero padding; the kernel trims both using the IPv4 total length.
func (p *Packet) Frame(src, dst net.HardwareAddr) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{
		Version:    4,
		TOS:        p.TOS,
		Id:         p.ID,
		FragOffset: p.FragOff,
		TTL:        p.TTL,
		Protocol:   layers.IPProtocol(p.Proto),
		SrcIP:      p.Src.AsSlice(),
		DstIP:      p.Dst.AsSlice(),
	}
	if p.DF {
		ip.Flags |= layers.IPv4DontFragment
	}
	if p.MF {
		ip.Flags |= layers.IPv4MoreFragments
	}
	if p.Evil {
		ip.Flags |= layers.IPv4EvilBit
	}
	if len(p.Options) > 0 {
		var err error
		if ip.Options, err = splitOptions(p.Options); err != nil {
			return nil, err
		}
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, opts, ip, gopacket.Payload(p.L4)); err != nil {
		return nil, fmt.Errorf("serialize IPv4: %w", err)
	}
	datagram := buf.Bytes()
	if got, want := int(binary.BigEndian.Uint16(datagram[2:])), p.IPLen(); got != want {
		return nil, fmt.Errorf("serialized total length %d, want %d", got, want)
	}
	// The Ethernet layer pads short frames with zeros to the 60-byte
	// minimum, after the trailer, as a NIC would.
	body := append(append([]byte{}, datagram...), p.Trailer...)
	frame := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(frame, opts, eth, gopacket.Payload(body)); err != nil {
		return nil, fmt.Errorf("serialize Ethernet: %w", err)
	}
	return frame.Bytes(), nil
}

// splitOptions turns raw option bytes into gopacket options (which it writes
// back verbatim: one byte for EOL and NOP, type-length-data otherwise),
// padded with EOL bytes to a multiple of four.
func splitOptions(raw []byte) ([]layers.IPv4Option, error) {
	var opts []layers.IPv4Option
	n := 0
	for i := 0; i < len(raw); {
		t := raw[i]
		if t <= 1 {
			opts = append(opts, layers.IPv4Option{OptionType: t})
			i++
			n++
			continue
		}
		if i+1 >= len(raw) || raw[i+1] < 2 || i+int(raw[i+1]) > len(raw) {
			return nil, fmt.Errorf("malformed IPv4 option bytes %x at %d", raw, i)
		}
		l := int(raw[i+1])
		opts = append(opts, layers.IPv4Option{OptionType: t, OptionLength: uint8(l), OptionData: raw[i+2 : i+l]})
		i += l
		n += l
	}
	for ; n%4 != 0; n++ {
		opts = append(opts, layers.IPv4Option{OptionType: 0})
	}
	if n > 40 {
		return nil, fmt.Errorf("IPv4 options of %d bytes exceed 40", n)
	}
	return opts, nil
}

// TCP flag bits (byte 13 of the TCP header).
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
	flagURG = 0x20
	flagECE = 0x40
	flagCWR = 0x80
)

// TCPSegment builds a TCP header plus payload. rawOpts are written verbatim
// after the fixed header and may be malformed; doff is the data offset in
// 32-bit words, 0 meaning "just covers the options". The checksum is
// correct for src/dst.
func TCPSegment(src, dst netip.Addr, sport, dport uint16, flags uint8, rawOpts []byte, doff uint8, payload []byte) ([]byte, error) {
	if doff == 0 {
		doff = uint8(5 + (len(rawOpts)+3)/4)
		for len(rawOpts)%4 != 0 {
			rawOpts = append(rawOpts[:len(rawOpts):len(rawOpts)], 0)
		}
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport),
		Seq: 0x01020304 ^ uint32(sport)<<16 ^ uint32(dport), Window: 512,
		DataOffset: doff,
		FIN:        flags&flagFIN != 0, SYN: flags&flagSYN != 0, RST: flags&flagRST != 0,
		PSH: flags&flagPSH != 0, ACK: flags&flagACK != 0, URG: flags&flagURG != 0,
		ECE: flags&flagECE != 0, CWR: flags&flagCWR != 0,
	}
	if flags&flagACK != 0 {
		tcp.Ack = 0x0a0b0c0d
	}
	if err := tcp.SetNetworkLayerForChecksum(pseudoIP(src, dst, layers.IPProtocolTCP)); err != nil {
		return nil, err
	}
	body := append(append([]byte{}, rawOpts...), payload...)
	return serializeL4(tcp, body)
}

// UDPDatagram builds a UDP header with a correct length and checksum.
func UDPDatagram(src, dst netip.Addr, sport, dport uint16, payload []byte) ([]byte, error) {
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := udp.SetNetworkLayerForChecksum(pseudoIP(src, dst, layers.IPProtocolUDP)); err != nil {
		return nil, err
	}
	return serializeL4(udp, payload)
}

// ICMPMessage builds an ICMP header (type, code, checksum, 4 bytes of
// id/sequence) plus payload.
func ICMPMessage(typ, code uint8, id, seq uint16, payload []byte) ([]byte, error) {
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: id, Seq: seq}
	return serializeL4(icmp, payload)
}

func pseudoIP(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Protocol: proto}
}

func serializeL4(l gopacket.SerializableLayer, payload []byte) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	// FixLengths would recompute the TCP data offset; lengths are set by
	// hand (UDP's below) so malformed offsets survive.
	opts := gopacket.SerializeOptions{ComputeChecksums: true}
	if u, ok := l.(*layers.UDP); ok {
		u.Length = uint16(8 + len(payload))
	}
	if err := gopacket.SerializeLayers(buf, opts, l, gopacket.Payload(payload)); err != nil {
		return nil, fmt.Errorf("serialize %T: %w", l, err)
	}
	return append([]byte{}, buf.Bytes()...), nil
}

// String describes the packet for failure messages.
func (p *Packet) String() string {
	s := fmt.Sprintf("%v > %v proto %d ttl %d tos %#x id %d len %d", p.Src, p.Dst, p.Proto, p.TTL, p.TOS, p.ID, p.IPLen())
	if p.DF {
		s += " DF"
	}
	if p.MF {
		s += " MF"
	}
	if p.Evil {
		s += " CE"
	}
	if p.FragOff != 0 {
		s += fmt.Sprintf(" frag %d", p.FragOff)
	}
	if len(p.Options) > 0 {
		s += fmt.Sprintf(" ipopts %x", p.Options)
	}
	n := min(len(p.L4), 40)
	s += fmt.Sprintf(" l4 %x", p.L4[:n])
	if len(p.Trailer) > 0 {
		s += fmt.Sprintf(" trailer %d", len(p.Trailer))
	}
	return s
}
