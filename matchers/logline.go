package matchers

import (
	"encoding/binary"
	"strconv"

	"github.com/qtables/qtables/packet"
)

// LOG flags (the kernel's NF_LOG_* bits), the bits of LogTarget.Flags.
const (
	LogTCPSequence uint8 = 0x01 // --log-tcp-sequence
	LogTCPOptions  uint8 = 0x02 // --log-tcp-options
	LogIPOptions   uint8 = 0x04 // --log-ip-options
	LogUID         uint8 = 0x08 // --log-uid
	LogMACDecode   uint8 = 0x20 // --log-macdecode

	logFlagMask uint8 = 0x2f
)

// Capture link types (pcap LINKTYPE_*) whose link header the log line can
// show, and the ARPHRD device types read from Linux cooked headers.
const (
	logLinkEthernet = 1
	logLinkSLL      = 113
	logLinkSLL2     = 276

	logARPHRDLoopback = 772
)

// AppendLogLine appends to dst the line the kernel's LOG target
// (nf_log_syslog, IPv4) writes for the packet in c, as it stands in Linux
// 6.18, without the syslog level marker and without a newline; every field
// ends in one space, so the line does too. prefix is printed verbatim
// before "IN=". flags are the Log* flags. It allocates only when dst must
// grow.
//
// The packet is read from c.Pkt.Network as the kernel reads the skb: the
// datagram's length is len(Network), so a packet cut by the capture's snap
// length is logged like a short datagram (INCOMPLETE fields). Offline
// choices, where the capture cannot tell what the kernel would know:
//   - MAC= is printed only when c.In is set, as the kernel does. An
//     Ethernet header is shown as the 14 bytes the kernel's MAC header holds
//     after VLAN acceleration has removed any 802.1Q/802.1ad tag
//     (destination, source, inner ethertype); with --log-macdecode the
//     removed outermost tag is reported as VPROTO=/VID= (VID is the whole
//     TCI, priority bits included, as the kernel prints it). A Linux cooked
//     (SLL/SLL2) capture of the loopback device is shown as lo's all-zero
//     header; other cooked or raw-IP captures have no usable header and give
//     "MAC= ".
//   - UID=/GID= (--log-uid) need the local socket, which a capture does not
//     have: never printed.
//   - The TCP AE flag and the 3-bit RES field are those of kernels with
//     AccECN support (6.18, installed here); older kernels print RES from
//     four bits instead.
func AppendLogLine(dst []byte, c *Context, prefix string, flags uint8) []byte {
	dst = append(dst, prefix...)
	dst = append(dst, "IN="...)
	dst = append(dst, c.In...)
	dst = append(dst, " OUT="...)
	dst = append(dst, c.Out...)
	dst = append(dst, ' ')
	var nw []byte
	if c.Pkt != nil {
		nw = c.Pkt.Network
	}
	if c.In != "" {
		dst = appendLogMAC(dst, c.Pkt, flags)
	}
	return appendLogIPv4(dst, nw, 0, flags, c.Mark)
}

// appendLogMAC appends the link-layer part (kernel dump_mac_header).
func appendLogMAC(dst []byte, v *packet.View, flags uint8) []byte {
	var link []byte
	var linkType uint16
	if v != nil {
		link, linkType = v.Link, v.LinkType
	}
	if linkType == logLinkEthernet {
		if flags&LogMACDecode != 0 {
			if len(link) < 14 {
				return dst // no complete Ethernet header: nothing at all
			}
			dst = append(dst, "MACSRC="...)
			dst = appendLogHexBytes(dst, link[6:12], ':', false)
			dst = append(dst, " MACDST="...)
			dst = appendLogHexBytes(dst, link[0:6], ':', false)
			dst = append(dst, ' ')
			proto := binary.BigEndian.Uint16(link[12:])
			if (proto == 0x8100 || proto == 0x88a8) && len(link) >= 18 {
				dst = append(dst, "VPROTO="...)
				dst = appendLogHex16(dst, proto)
				dst = append(dst, " VID="...)
				dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(link[14:])), 10)
				dst = append(dst, ' ')
				proto = binary.BigEndian.Uint16(link[16:])
			}
			dst = append(dst, "MACPROTO="...)
			dst = appendLogHex16(dst, proto)
			return append(dst, ' ')
		}
		dst = append(dst, "MAC="...)
		if len(link) >= 14 {
			dst = appendLogHexBytes(dst, link[0:12], ':', false)
			proto := link[12:14]
			if p := binary.BigEndian.Uint16(proto); (p == 0x8100 || p == 0x88a8) && len(link) >= 18 {
				proto = link[16:18]
			}
			dst = append(dst, ':')
			dst = appendLogHexBytes(dst, proto, ':', false)
		}
		return append(dst, ' ')
	}
	dst = append(dst, "MAC="...)
	if hatype, proto, ok := logCookedHeader(link, linkType); ok && hatype == logARPHRDLoopback {
		// lo's header: zero destination and source, then the protocol.
		for i := 0; i < 12; i++ {
			dst = append(dst, "00:"...)
		}
		dst = appendLogHexBytes(dst, proto, ':', false)
	}
	return append(dst, ' ')
}

// logCookedHeader returns the ARPHRD type and the protocol bytes of a Linux
// cooked capture header (SLL or SLL2).
func logCookedHeader(link []byte, linkType uint16) (hatype uint16, proto []byte, ok bool) {
	switch {
	case linkType == logLinkSLL && len(link) >= 16:
		return binary.BigEndian.Uint16(link[2:4]), link[14:16], true
	case linkType == logLinkSLL2 && len(link) >= 20:
		return binary.BigEndian.Uint16(link[8:10]), link[0:2], true
	}
	return 0, nil, false
}

// ICMP types with a minimum length the kernel checks before printing their
// fields (kernel required_len), in bytes after the IP header.
var logICMPRequiredLen = [19]uint8{
	0:  4,  // echo reply
	3:  28, // destination unreachable
	4:  28, // source quench
	5:  28, // redirect
	8:  4,  // echo request
	11: 28, // time exceeded
	12: 28, // parameter problem
	13: 20, // timestamp
	14: 20, // timestamp reply
	17: 12, // address mask request
	18: 12, // address mask reply
}

// appendLogIPv4 appends the IPv4 part (kernel dump_ipv4_packet) for the
// header at b[off:]; b is the whole datagram (the skb). off is 0 at top
// level and the embedded datagram's offset in an ICMP error, which is
// dumped once, without UID and MARK.
func appendLogIPv4(dst, b []byte, off int, flags uint8, mark uint32) []byte {
	if !logAvail(b, off, 20) {
		return append(dst, "TRUNCATED"...)
	}
	ih := b[off:]
	ihl := int(ih[0]&0x0f) * 4
	tos := ih[1]
	frag := binary.BigEndian.Uint16(ih[6:])
	proto := ih[9]

	dst = append(dst, "SRC="...)
	dst = appendLogIPv4Addr(dst, ih[12:16])
	dst = append(dst, " DST="...)
	dst = appendLogIPv4Addr(dst, ih[16:20])
	dst = append(dst, " LEN="...)
	dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(ih[2:])), 10)
	dst = append(dst, " TOS=0x"...)
	dst = appendLogHex8(dst, tos&0x1e, true)
	dst = append(dst, " PREC=0x"...)
	dst = appendLogHex8(dst, tos&0xe0, true)
	dst = append(dst, " TTL="...)
	dst = strconv.AppendUint(dst, uint64(ih[8]), 10)
	dst = append(dst, " ID="...)
	dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(ih[4:])), 10)
	dst = append(dst, ' ')

	if frag&packet.IPv4Reserved != 0 {
		dst = append(dst, "CE "...)
	}
	if frag&packet.IPv4DF != 0 {
		dst = append(dst, "DF "...)
	}
	if frag&packet.IPv4MF != 0 {
		dst = append(dst, "MF "...)
	}
	fragOff := frag & packet.IPv4OffMask
	if fragOff != 0 {
		dst = append(dst, "FRAG:"...)
		dst = strconv.AppendUint(dst, uint64(fragOff), 10)
		dst = append(dst, ' ')
	}

	if flags&LogIPOptions != 0 && ihl > 20 {
		if !logAvail(b, off+20, ihl-20) {
			return append(dst, "TRUNCATED"...)
		}
		dst = append(dst, "OPT ("...)
		dst = appendLogHexBytes(dst, b[off+20:off+ihl], 0, true)
		dst = append(dst, ") "...)
	}

	l4 := off + ihl
	fragment := fragOff != 0
	switch proto {
	case packet.ProtoTCP:
		var stop bool
		if dst, stop = appendLogTCP(dst, b, l4, fragment, flags); stop {
			return dst
		}
	case packet.ProtoUDP, logProtoUDPLite:
		if proto == packet.ProtoUDP {
			dst = append(dst, "PROTO=UDP "...)
		} else {
			dst = append(dst, "PROTO=UDPLITE "...)
		}
		if !fragment {
			if !logAvail(b, l4, 8) {
				return appendLogIncomplete(dst, b, l4)
			}
			uh := b[l4:]
			dst = append(dst, "SPT="...)
			dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(uh[0:])), 10)
			dst = append(dst, " DPT="...)
			dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(uh[2:])), 10)
			dst = append(dst, " LEN="...)
			dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(uh[4:])), 10)
			dst = append(dst, ' ')
		}
	case packet.ProtoICMP:
		dst = appendLogICMP(dst, b, off, l4, fragment, flags, mark)
	case logProtoAH:
		// Non-first AH fragments print no protocol at all.
		if !fragment {
			dst = append(dst, "PROTO=AH "...)
			if !logAvail(b, l4, 12) {
				dst = appendLogIncomplete(dst, b, l4)
			} else {
				dst = appendLogSPI(dst, b[l4+4:l4+8])
			}
		}
	case logProtoESP:
		dst = append(dst, "PROTO=ESP "...)
		if !fragment {
			if !logAvail(b, l4, 8) {
				dst = appendLogIncomplete(dst, b, l4)
			} else {
				dst = appendLogSPI(dst, b[l4:l4+4])
			}
		}
	default:
		dst = append(dst, "PROTO="...)
		dst = strconv.AppendUint(dst, uint64(proto), 10)
		dst = append(dst, ' ')
	}

	// --log-uid: the owning socket is never known offline (see AppendLogLine).
	if off == 0 && mark != 0 {
		dst = append(dst, "MARK=0x"...)
		dst = strconv.AppendUint(dst, uint64(mark), 16)
		dst = append(dst, ' ')
	}
	return dst
}

const (
	logProtoESP     = 50
	logProtoAH      = 51
	logProtoUDPLite = 136
)

// appendLogTCP appends the TCP part (kernel nf_log_dump_tcp_header). stop
// reports that the kernel ends the IPv4 dump here (short header, or options
// cut off), so that neither UID nor MARK follow.
func appendLogTCP(dst, b []byte, l4 int, fragment bool, flags uint8) (_ []byte, stop bool) {
	dst = append(dst, "PROTO=TCP "...)
	if fragment {
		return dst, false
	}
	if !logAvail(b, l4, 20) {
		return appendLogIncomplete(dst, b, l4), true
	}
	th := b[l4:]
	dst = append(dst, "SPT="...)
	dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(th[0:])), 10)
	dst = append(dst, " DPT="...)
	dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(th[2:])), 10)
	dst = append(dst, ' ')
	if flags&LogTCPSequence != 0 {
		dst = append(dst, "SEQ="...)
		dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint32(th[4:])), 10)
		dst = append(dst, " ACK="...)
		dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint32(th[8:])), 10)
		dst = append(dst, ' ')
	}
	dst = append(dst, "WINDOW="...)
	dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(th[14:])), 10)
	// RES: the three reserved bits between the data offset and AE, in the
	// position the kernel's ">> 22" of the flag word leaves them.
	dst = append(dst, " RES=0x"...)
	dst = appendLogHex8(dst, (th[12]&0x0e)<<2, false)
	dst = append(dst, ' ')
	if th[12]&0x01 != 0 {
		dst = append(dst, "AE "...)
	}
	fl := th[13]
	for _, f := range logTCPFlagWords {
		if fl&f.bit != 0 {
			dst = append(dst, f.word...)
		}
	}
	dst = append(dst, "URGP="...)
	dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(th[18:])), 10)
	dst = append(dst, ' ')
	if doff := int(th[12]>>4) * 4; flags&LogTCPOptions != 0 && doff > 20 {
		if !logAvail(b, l4+20, doff-20) {
			return append(dst, "OPT (TRUNCATED)"...), true
		}
		dst = append(dst, "OPT ("...)
		dst = appendLogHexBytes(dst, b[l4+20:l4+doff], 0, true)
		dst = append(dst, ") "...)
	}
	return dst, false
}

// logTCPFlagWords are the TCP flags in the order the kernel prints them.
var logTCPFlagWords = [...]struct {
	bit  uint8
	word string
}{
	{packet.TCPCwr, "CWR "}, {packet.TCPEce, "ECE "}, {packet.TCPUrg, "URG "},
	{packet.TCPAck, "ACK "}, {packet.TCPPsh, "PSH "}, {packet.TCPRst, "RST "},
	{packet.TCPSyn, "SYN "}, {packet.TCPFin, "FIN "},
}

// appendLogICMP appends the ICMP part (the kernel's IPPROTO_ICMP case). A
// short ICMP message does not end the IPv4 dump: MARK still follows.
func appendLogICMP(dst, b []byte, off, l4 int, fragment bool, flags uint8, mark uint32) []byte {
	dst = append(dst, "PROTO=ICMP "...)
	if fragment {
		return dst
	}
	if !logAvail(b, l4, 8) {
		return appendLogIncomplete(dst, b, l4)
	}
	ic := b[l4:]
	typ, code := ic[0], ic[1]
	dst = append(dst, "TYPE="...)
	dst = strconv.AppendUint(dst, uint64(typ), 10)
	dst = append(dst, " CODE="...)
	dst = strconv.AppendUint(dst, uint64(code), 10)
	dst = append(dst, ' ')
	if int(typ) < len(logICMPRequiredLen) {
		if req := int(logICMPRequiredLen[typ]); req != 0 && len(b)-l4 < req {
			return appendLogIncomplete(dst, b, l4)
		}
	}
	switch typ {
	case 0, 8: // echo reply, echo request
		dst = append(dst, "ID="...)
		dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(ic[4:])), 10)
		dst = append(dst, " SEQ="...)
		dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(ic[6:])), 10)
		dst = append(dst, ' ')
	case 12: // parameter problem: the pointer byte
		dst = append(dst, "PARAMETER="...)
		dst = strconv.AppendUint(dst, uint64(ic[4]), 10)
		dst = append(dst, ' ')
	case 5, 3, 4, 11: // redirect, destination unreachable, source quench, time exceeded
		if typ == 5 {
			dst = append(dst, "GATEWAY="...)
			dst = appendLogIPv4Addr(dst, ic[4:8])
			dst = append(dst, ' ')
		}
		if off == 0 { // the kernel recurses only once
			dst = append(dst, '[')
			dst = appendLogIPv4(dst, b, l4+8, flags, mark)
			dst = append(dst, "] "...)
		}
		if typ == 3 && code == 4 { // fragmentation needed
			dst = append(dst, "MTU="...)
			dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(ic[6:])), 10)
			dst = append(dst, ' ')
		}
	}
	return dst
}

// logAvail reports whether n bytes at off are inside b (the kernel's
// skb_header_pointer succeeding).
func logAvail(b []byte, off, n int) bool {
	return off >= 0 && n >= 0 && off <= len(b) && n <= len(b)-off
}

// appendLogIncomplete appends "INCOMPLETE [n bytes] " with n the bytes from
// off to the end of the datagram, computed in u32 as the kernel does (an
// offset past the end wraps around).
func appendLogIncomplete(dst, b []byte, off int) []byte {
	dst = append(dst, "INCOMPLETE ["...)
	dst = strconv.AppendUint(dst, uint64(uint32(len(b))-uint32(off)), 10)
	return append(dst, " bytes] "...)
}

func appendLogSPI(dst, spi []byte) []byte {
	dst = append(dst, "SPI=0x"...)
	dst = strconv.AppendUint(dst, uint64(binary.BigEndian.Uint32(spi)), 16)
	return append(dst, ' ')
}

func appendLogIPv4Addr(dst, a []byte) []byte {
	for i := 0; i < 4; i++ {
		if i > 0 {
			dst = append(dst, '.')
		}
		dst = strconv.AppendUint(dst, uint64(a[i]), 10)
	}
	return dst
}

const (
	logHexLower = "0123456789abcdef"
	logHexUpper = "0123456789ABCDEF"
)

// appendLogHex8 appends v as two hex digits.
func appendLogHex8(dst []byte, v byte, upper bool) []byte {
	digits := logHexLower
	if upper {
		digits = logHexUpper
	}
	return append(dst, digits[v>>4], digits[v&0x0f])
}

// appendLogHex16 appends v as four lowercase hex digits ("%04x").
func appendLogHex16(dst []byte, v uint16) []byte {
	dst = appendLogHex8(dst, byte(v>>8), false)
	return appendLogHex8(dst, byte(v), false)
}

// appendLogHexBytes appends each byte of p as two hex digits, separated by
// sep unless sep is 0.
func appendLogHexBytes(dst, p []byte, sep byte, upper bool) []byte {
	for i, v := range p {
		if i > 0 && sep != 0 {
			dst = append(dst, sep)
		}
		dst = appendLogHex8(dst, v, upper)
	}
	return dst
}
