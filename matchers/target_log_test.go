package matchers

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/qtables/qtables/packet"
)

// logCases were checked against iptables-save / iptables -L[ -n] 1.8.9.
var logCases = []targetCase{
	{args: "", save: "", listN: " LOG flags 0 level 4", list: " LOG level warn"},
	{args: `--log-prefix "FW DROP: " --log-level info`, save: ` --log-prefix "FW DROP: " --log-level 6`,
		listN: ` LOG flags 0 level 6 prefix "FW DROP: "`, list: ` LOG level info prefix "FW DROP: "`},
	{args: "--log-prefix abc --log-level 4", save: " --log-prefix abc",
		listN: ` LOG flags 0 level 4 prefix "abc"`, list: ` LOG level warn prefix "abc"`},
	{args: "--log-level 7 --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid --log-macdecode",
		save:  " --log-level 7 --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid --log-macdecode",
		listN: " LOG flags 47 level 7", list: " LOG level debug tcp-sequence tcp-options ip-options uid macdecode"},
	{args: "--log-macdecode --log-uid --log-ip-options --log-tcp-options --log-tcp-sequence",
		save:  " --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid --log-macdecode",
		listN: " LOG flags 47 level 4", list: " LOG level warn tcp-sequence tcp-options ip-options uid macdecode"},
	{args: "--log-level panic", save: " --log-level 0", listN: " LOG flags 0 level 0", list: " LOG level emerg"},
	{args: "--log-level emerg", save: " --log-level 0", listN: " LOG flags 0 level 0", list: " LOG level emerg"},
	{args: "--log-level alert", save: " --log-level 1", listN: " LOG flags 0 level 1", list: " LOG level alert"},
	{args: "--log-level crit", save: " --log-level 2", listN: " LOG flags 0 level 2", list: " LOG level crit"},
	{args: "--log-level error", save: " --log-level 3", listN: " LOG flags 0 level 3", list: " LOG level err"},
	{args: "--log-level warning", save: "", listN: " LOG flags 0 level 4", list: " LOG level warn"},
	{args: "--log-level notice", save: " --log-level 5", listN: " LOG flags 0 level 5", list: " LOG level notice"},
	{args: "--log-level debug", save: " --log-level 7", listN: " LOG flags 0 level 7", list: " LOG level debug"},
	{args: "--log-level 0", save: " --log-level 0", listN: " LOG flags 0 level 0", list: " LOG level emerg"},
	{args: "--log-level 07", save: " --log-level 7", listN: " LOG flags 0 level 7", list: " LOG level debug"},
	{args: "--log-level 0x3", save: " --log-level 3", listN: " LOG flags 0 level 3", list: " LOG level err"},
	{args: `--log-level " 3"`, save: " --log-level 3", listN: " LOG flags 0 level 3", list: " LOG level err"},
	{args: "--log-level +2", save: " --log-level 2", listN: " LOG flags 0 level 2", list: " LOG level crit"},
	{args: "--log-level 2 --log-uid", save: " --log-level 2 --log-uid", listN: " LOG flags 8 level 2", list: " LOG level crit uid"},
	{args: "--log-prefix 012345678901234567890123456789AB", save: " --log-prefix 01234567890123456789012345678",
		listN: ` LOG flags 0 level 4 prefix "01234567890123456789012345678"`, list: ` LOG level warn prefix "01234567890123456789012345678"`},
	{args: `--log-prefix "a b"`, save: ` --log-prefix "a b"`, listN: ` LOG flags 0 level 4 prefix "a b"`, list: ` LOG level warn prefix "a b"`},
	{args: "--log-prefix abc --log-level 5 --log-macdecode", save: " --log-prefix abc --log-level 5 --log-macdecode",
		listN: ` LOG flags 32 level 5 prefix "abc"`, list: ` LOG level notice macdecode prefix "abc"`},
	{rule: Rule{Table: "raw", Chain: "PREROUTING"}, args: "", save: "", listN: " LOG flags 0 level 4", list: " LOG level warn"},
	// Prefixes the space-separated args cannot carry.
	{args: "quoting 1", argv: []string{"--log-prefix", `a"b'c\d`, "--log-level", "emerg"}, save: ` --log-prefix "a\"b\'c\\d" --log-level 0`,
		listN: ` LOG flags 0 level 0 prefix "a"b'c\d"`, list: ` LOG level emerg prefix "a"b'c\d"`},
	{args: "quoting 2", argv: []string{"--log-level", "1", "--log-prefix", `x"y`}, save: ` --log-prefix "x\"y" --log-level 1`,
		listN: ` LOG flags 0 level 1 prefix "x"y"`, list: ` LOG level alert prefix "x"y"`},
	{args: "tab", argv: []string{"--log-prefix", "a\tb"}, save: " --log-prefix \"a\tb\"",
		listN: " LOG flags 0 level 4 prefix \"a\tb\"", list: " LOG level warn prefix \"a\tb\""},
	// Refused.
	{args: "newline", argv: []string{"--log-prefix", "a\nb"}},
	{args: "--log-level 8"},
	{args: "--log-level WARNING"},
	{args: "--log-level warn"},
	{args: "--log-level err"},
	{args: "--log-level emer"},
	{args: "--log-level 3x"},
	{args: "--log-level -1"},
	{args: `--log-level ""`},
	{args: `--log-prefix ""`},
	{args: "--log-level 1 --log-level 2"},
	{args: "--log-uid --log-uid"},
	{args: "! --log-uid"},
}

func TestLOGSaveList(t *testing.T) { runTargetCases(t, "LOG", logCases) }

// TestLOGPrefixNewline: a newline is refused, even after the 29 bytes that
// are kept.
func TestLOGPrefixNewline(t *testing.T) {
	for _, p := range []string{"a\nb", strings.Repeat("x", 40) + "\n"} {
		if _, err := buildTarget("LOG", Rule{}, "--log-prefix", p); err == nil {
			t.Errorf("--log-prefix %q accepted", p)
		}
	}
}

// --- kernel log line ---

var (
	tgtMAC1 = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
	tgtMAC2 = net.HardwareAddr{0x52, 0x54, 0x00, 0x11, 0x22, 0x33}
)

// tgtSerialize serializes ls with lengths and checksums fixed.
func tgtSerialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	var ip *layers.IPv4
	for _, l := range ls {
		switch l := l.(type) {
		case *layers.IPv4:
			ip = l
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tgtEthView returns a View of an Ethernet frame whose first 14 bytes are
// the Ethernet header (or 18 with one VLAN tag).
func tgtEthView(frame []byte, linkLen int) *packet.View {
	return &packet.View{LinkType: 1, Link: frame[:linkLen], Network: frame[linkLen:], VLAN: -1}
}

func tgtRawView(dgram []byte) *packet.View {
	return &packet.View{LinkType: 101, Network: dgram, VLAN: -1}
}

func tgtIPv4(src, dst string, proto layers.IPProtocol, ttl uint8, id uint16) *layers.IPv4 {
	return &layers.IPv4{Version: 4, TTL: ttl, Id: id, Protocol: proto,
		SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
}

func tgtEth(dst, src net.HardwareAddr) *layers.Ethernet {
	return &layers.Ethernet{DstMAC: dst, SrcMAC: src, EthernetType: layers.EthernetTypeIPv4}
}

// tgtLine formats one log line through the LOG target's Apply.
func tgtLine(t testing.TB, v *packet.View, in, out string, mark uint32, argv ...string) string {
	t.Helper()
	tg, err := buildTarget("LOG", Rule{}, argv...)
	if err != nil {
		t.Fatal(err)
	}
	c := &Context{Pkt: v, In: in, Out: out, Mark: mark}
	if vd := tg.Apply(c); vd != Continue {
		t.Fatalf("verdict %v", vd)
	}
	if len(c.Events) != 1 || c.Events[0].Kind != EventLog {
		t.Fatalf("events %+v", c.Events)
	}
	return string(c.Events[0].Text)
}

// tgtSYN is the TCP SYN of spec §6.3.1's first worked example, with the
// usual Linux SYN options (20 bytes, so that LEN=60).
func tgtSYN(t testing.TB) []byte {
	ip := tgtIPv4("198.51.100.7", "192.0.2.10", layers.IPProtocolTCP, 52, 31337)
	ip.Flags = layers.IPv4DontFragment
	tcp := &layers.TCP{SrcPort: 51514, DstPort: 22, Seq: 2818386245, SYN: true, Window: 64240,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0}},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}}
	return tgtSerialize(t, tgtEth(tgtMAC1, tgtMAC2), ip, tcp)
}

// tgtPortUnreach is the ICMP port unreachable of spec §6.3.1: an error for
// a UDP datagram 192.0.2.10:5000 -> 192.0.2.1:9 with no payload.
func tgtPortUnreach(t testing.TB, code uint8, innerProto layers.IPProtocol, inner ...gopacket.SerializableLayer) []byte {
	iip := tgtIPv4("192.0.2.10", "192.0.2.1", innerProto, 64, 2)
	innerBytes := tgtSerialize(t, append([]gopacket.SerializableLayer{iip}, inner...)...)
	ip := tgtIPv4("192.0.2.1", "192.0.2.10", layers.IPProtocolICMPv4, 64, 1)
	ip.TOS = 0xc0
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, code)}
	if code == 4 {
		icmp.Seq = 1400 // next-hop MTU, bytes 6-7
	}
	return tgtSerialize(t, tgtEth(tgtMAC1, tgtMAC2), ip, icmp, gopacket.Payload(innerBytes))
}

// TestLOGLineWorkedExamples reproduces the worked examples of spec §6.3.1.
func TestLOGLineWorkedExamples(t *testing.T) {
	syn := tgtEthView(tgtSYN(t), 14)
	const synHead = "SSH-IN: IN=eth0 OUT= MAC=52:54:00:aa:bb:cc:52:54:00:11:22:33:08:00 SRC=198.51.100.7 DST=192.0.2.10 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=31337 DF PROTO=TCP SPT=51514 DPT=22 "
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"tcp syn", tgtLine(t, syn, "eth0", "", 0, "--log-prefix", "SSH-IN: "),
			synHead + "WINDOW=64240 RES=0x00 SYN URGP=0 "},
		{"tcp syn sequence", tgtLine(t, syn, "eth0", "", 0, "--log-prefix", "SSH-IN: ", "--log-tcp-sequence"),
			synHead + "SEQ=2818386245 ACK=0 WINDOW=64240 RES=0x00 SYN URGP=0 "},
		// The option bytes as built above: MSS 1460, SACK permitted,
		// timestamps 0x0a0b0c0d/0, NOP, window scale 7.
		{"tcp syn options", tgtLine(t, syn, "eth0", "", 0, "--log-prefix", "SSH-IN: ", "--log-tcp-options", "--log-tcp-sequence"),
			synHead + "SEQ=2818386245 ACK=0 WINDOW=64240 RES=0x00 SYN URGP=0 OPT (020405B40402080A0A0B0C0D0000000001030307) "},
		// --log-uid prints nothing offline; --log-ip-options nothing without options.
		{"tcp syn uid", tgtLine(t, syn, "eth0", "", 0, "--log-prefix", "SSH-IN: ", "--log-uid", "--log-ip-options"),
			synHead + "WINDOW=64240 RES=0x00 SYN URGP=0 "},
		{"udp output", func() string {
			ip := tgtIPv4("192.0.2.10", "203.0.113.53", layers.IPProtocolUDP, 64, 4242)
			udp := &layers.UDP{SrcPort: 40123, DstPort: 53}
			udp.SetNetworkLayerForChecksum(ip)
			return tgtLine(t, tgtRawView(tgtSerialize(t, ip, udp, gopacket.Payload(make([]byte, 43)))), "", "eth0", 0)
		}(), "IN= OUT=eth0 SRC=192.0.2.10 DST=203.0.113.53 LEN=71 TOS=0x00 PREC=0x00 TTL=64 ID=4242 PROTO=UDP SPT=40123 DPT=53 LEN=51 "},
		{"icmp echo forwarded", func() string {
			ip := tgtIPv4("10.0.0.5", "8.8.8.8", layers.IPProtocolICMPv4, 63, 0)
			ip.Flags = layers.IPv4DontFragment
			icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 4711, Seq: 1}
			eth := tgtEth(net.HardwareAddr{0, 0x16, 0x3e, 0, 0, 1}, net.HardwareAddr{0, 0x16, 0x3e, 0, 0, 2})
			return tgtLine(t, tgtEthView(tgtSerialize(t, eth, ip, icmp, gopacket.Payload(make([]byte, 56))), 14), "eth1", "eth0", 1)
		}(), "IN=eth1 OUT=eth0 MAC=00:16:3e:00:00:01:00:16:3e:00:00:02:08:00 SRC=10.0.0.5 DST=8.8.8.8 LEN=84 TOS=0x00 PREC=0x00 TTL=63 ID=0 DF PROTO=ICMP TYPE=8 CODE=0 ID=4711 SEQ=1 MARK=0x1 "},
		{"icmp port unreachable", tgtLine(t, tgtEthView(tgtPortUnreach(t, 3, layers.IPProtocolUDP, &layers.UDP{SrcPort: 5000, DstPort: 9}), 14), "eth0", "", 0),
			"IN=eth0 OUT= MAC=52:54:00:aa:bb:cc:52:54:00:11:22:33:08:00 SRC=192.0.2.1 DST=192.0.2.10 LEN=56 TOS=0x00 PREC=0xC0 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=3 [SRC=192.0.2.10 DST=192.0.2.1 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=2 PROTO=UDP SPT=5000 DPT=9 LEN=8 ] "},
		{"non-first tcp fragment", func() string {
			ip := tgtIPv4("192.0.2.1", "192.0.2.10", layers.IPProtocolTCP, 64, 777)
			ip.FragOffset = 185
			return tgtLine(t, tgtRawView(tgtSerialize(t, ip, gopacket.Payload(make([]byte, 100)))), "", "eth0", 0)
		}(), "IN= OUT=eth0 SRC=192.0.2.1 DST=192.0.2.10 LEN=120 TOS=0x00 PREC=0x00 TTL=64 ID=777 FRAG:185 PROTO=TCP "},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, tc.got, tc.want)
		}
	}
}

// tgtHandIPv4 builds an IPv4 header by hand (for what gopacket would fix
// up): ihl in words, the total length as given, then payload.
func tgtHandIPv4(ihl int, totLen int, tos uint8, fragWord uint16, proto uint8, opts []byte, payload []byte) []byte {
	b := make([]byte, ihl*4, ihl*4+len(payload))
	b[0] = 0x40 | byte(ihl)
	b[1] = tos
	binary.BigEndian.PutUint16(b[2:], uint16(totLen))
	binary.BigEndian.PutUint16(b[4:], 4660)
	binary.BigEndian.PutUint16(b[6:], fragWord)
	b[8], b[9] = 64, proto
	copy(b[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	copy(b[20:], opts)
	return append(b, payload...)
}

// TestLOGLineFields covers the fields of spec §6.3.1 one by one; the
// expected texts follow the kernel's nf_log_syslog.c field rules.
func TestLOGLineFields(t *testing.T) {
	const ipHead = "IN= OUT= SRC=10.0.0.1 DST=10.0.0.2 "
	tcpHdr := func(byte12, byte13 uint8) []byte {
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], 1000)
		binary.BigEndian.PutUint16(h[2:], 80)
		binary.BigEndian.PutUint32(h[4:], 1)
		binary.BigEndian.PutUint32(h[8:], 4294967295)
		h[12], h[13] = byte12, byte13
		binary.BigEndian.PutUint16(h[14:], 512)
		binary.BigEndian.PutUint16(h[18:], 7)
		return h
	}
	raw := func(b []byte) *packet.View { return tgtRawView(b) }
	tests := []struct {
		name  string
		v     *packet.View
		mark  uint32
		argv  []string
		want  string
		inDev string
	}{
		{name: "tos prec and flags CE DF MF with offset",
			v:    raw(tgtHandIPv4(5, 28, 0xb9, 0xe005, 47, nil, make([]byte, 8))),
			want: ipHead + "LEN=28 TOS=0x18 PREC=0xA0 TTL=64 ID=4660 CE DF MF FRAG:5 PROTO=47 "},
		// TOS is tos AND 0x1E (IPTOS_TOS_MASK), which keeps the ECT(0) bit
		// 0x02 of the ECN field: an ECN-capable packet logs TOS=0x02.
		{name: "first fragment MF only, ECN CE", mark: 0xff,
			v:    raw(tgtHandIPv4(5, 28, 0x03, 0x2000, 17, nil, []byte{0, 53, 0, 54, 0, 100, 0, 0})),
			want: ipHead + "LEN=28 TOS=0x02 PREC=0x00 TTL=64 ID=4660 MF PROTO=UDP SPT=53 DPT=54 LEN=100 MARK=0xff "},
		{name: "ip options shown with --log-ip-options",
			v:    raw(tgtHandIPv4(6, 32, 0, 0, 17, []byte{0x94, 0x04, 0, 0}, []byte{0, 1, 0, 2, 0, 8, 0, 0})),
			argv: []string{"--log-ip-options"},
			want: ipHead + "LEN=32 TOS=0x00 PREC=0x00 TTL=64 ID=4660 OPT (94040000) PROTO=UDP SPT=1 DPT=2 LEN=8 "},
		{name: "ip options hidden without the flag",
			v:    raw(tgtHandIPv4(6, 32, 0, 0, 17, []byte{0x94, 0x04, 0, 0}, []byte{0, 1, 0, 2, 0, 8, 0, 0})),
			want: ipHead + "LEN=32 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=UDP SPT=1 DPT=2 LEN=8 "},
		{name: "tcp all flags, AE, reserved bits, sequence", mark: 0x10,
			v:    raw(tgtHandIPv4(5, 40, 0, 0, 6, nil, tcpHdr(0x5f, 0xff))),
			argv: []string{"--log-tcp-sequence", "--log-tcp-options"},
			want: ipHead + "LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=TCP SPT=1000 DPT=80 SEQ=1 ACK=4294967295 WINDOW=512 RES=0x38 AE CWR ECE URG ACK PSH RST SYN FIN URGP=7 MARK=0x10 "},
		{name: "tcp one reserved bit",
			v:    raw(tgtHandIPv4(5, 40, 0, 0, 6, nil, tcpHdr(0x52, 0x11))),
			want: ipHead + "LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=TCP SPT=1000 DPT=80 WINDOW=512 RES=0x08 ACK FIN URGP=7 "},
		{name: "tcp header cut: INCOMPLETE ends the line, no MARK", mark: 1,
			v:    raw(tgtHandIPv4(5, 30, 0, 0, 6, nil, make([]byte, 10))),
			want: ipHead + "LEN=30 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=TCP INCOMPLETE [10 bytes] "},
		{name: "tcp options cut: OPT (TRUNCATED) ends the line", mark: 1,
			v:    raw(tgtHandIPv4(5, 44, 0, 0, 6, nil, append(tcpHdr(0x80, 0x02), 2, 4, 5, 0xb4))),
			argv: []string{"--log-tcp-options"},
			want: ipHead + "LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=TCP SPT=1000 DPT=80 WINDOW=512 RES=0x00 SYN URGP=7 OPT (TRUNCATED)"},
		{name: "non-first tcp fragment continues to MARK", mark: 5,
			v:    raw(tgtHandIPv4(5, 28, 0, 10, 6, nil, make([]byte, 8))),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 FRAG:10 PROTO=TCP MARK=0x5 "},
		{name: "udp cut", mark: 2,
			v:    raw(tgtHandIPv4(5, 24, 0, 0, 17, nil, []byte{1, 2, 3, 4})),
			want: ipHead + "LEN=24 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=UDP INCOMPLETE [4 bytes] "},
		{name: "udplite",
			v:    raw(tgtHandIPv4(5, 28, 0, 0, 136, nil, []byte{0, 7, 0, 9, 0, 8, 0, 0})),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=UDPLITE SPT=7 DPT=9 LEN=8 "},
		{name: "non-first udp fragment",
			v:    raw(tgtHandIPv4(5, 28, 0, 0x0003, 17, nil, make([]byte, 8))),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 FRAG:3 PROTO=UDP "},
		{name: "icmp header cut: MARK still follows", mark: 1,
			v:    raw(tgtHandIPv4(5, 24, 0, 0, 1, nil, []byte{8, 0, 0, 0})),
			want: ipHead + "LEN=24 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP INCOMPLETE [4 bytes] MARK=0x1 "},
		{name: "icmp dest unreachable shorter than 28 bytes", mark: 3,
			v:    raw(tgtHandIPv4(5, 38, 0, 0, 1, nil, append([]byte{3, 1, 0, 0, 0, 0, 0, 0}, make([]byte, 10)...))),
			want: ipHead + "LEN=38 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP TYPE=3 CODE=1 INCOMPLETE [18 bytes] MARK=0x3 "},
		{name: "icmp timestamp needs 20 bytes",
			v:    raw(tgtHandIPv4(5, 36, 0, 0, 1, nil, append([]byte{13, 0, 0, 0, 0, 1, 0, 2}, make([]byte, 8)...))),
			want: ipHead + "LEN=36 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP TYPE=13 CODE=0 INCOMPLETE [16 bytes] "},
		{name: "icmp timestamp complete",
			v:    raw(tgtHandIPv4(5, 40, 0, 0, 1, nil, append([]byte{13, 0, 0, 0, 0, 1, 0, 2}, make([]byte, 12)...))),
			want: ipHead + "LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP TYPE=13 CODE=0 "},
		{name: "icmp echo reply",
			v:    raw(tgtHandIPv4(5, 28, 0, 0, 1, nil, []byte{0, 0, 0, 0, 0x12, 0x34, 0, 9})),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP TYPE=0 CODE=0 ID=4660 SEQ=9 "},
		{name: "icmp unknown type prints type and code only",
			v:    raw(tgtHandIPv4(5, 28, 0, 0, 1, nil, []byte{42, 7, 0, 0, 0, 0, 0, 0})),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP TYPE=42 CODE=7 "},
		{name: "icmp parameter problem: pointer, no nested dump",
			v:    raw(tgtHandIPv4(5, 48, 0, 0, 1, nil, append([]byte{12, 0, 0, 0, 20, 0, 0, 0}, tgtHandIPv4(5, 20, 0, 0, 17, nil, nil)...))),
			want: ipHead + "LEN=48 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP TYPE=12 CODE=0 PARAMETER=20 "},
		{name: "non-first icmp fragment",
			v:    raw(tgtHandIPv4(5, 28, 0, 0x0001, 1, nil, []byte{8, 0, 0, 0, 0, 1, 0, 1})),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 FRAG:1 PROTO=ICMP "},
		{name: "ah", v: raw(tgtHandIPv4(5, 32, 0, 0, 51, nil, []byte{6, 4, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 1})),
			want: ipHead + "LEN=32 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=AH SPI=0x1234 "},
		{name: "ah cut", v: raw(tgtHandIPv4(5, 28, 0, 0, 51, nil, make([]byte, 8))),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=AH INCOMPLETE [8 bytes] "},
		{name: "non-first ah fragment prints no protocol", mark: 9,
			v:    raw(tgtHandIPv4(5, 28, 0, 2, 51, nil, make([]byte, 8))),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 FRAG:2 MARK=0x9 "},
		{name: "esp", v: raw(tgtHandIPv4(5, 28, 0, 0, 50, nil, []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1})),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ESP SPI=0xdeadbeef "},
		{name: "esp cut", v: raw(tgtHandIPv4(5, 24, 0, 0, 50, nil, make([]byte, 4))),
			want: ipHead + "LEN=24 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ESP INCOMPLETE [4 bytes] "},
		{name: "non-first esp fragment", v: raw(tgtHandIPv4(5, 28, 0, 2, 50, nil, make([]byte, 8))),
			want: ipHead + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=4660 FRAG:2 PROTO=ESP "},
		{name: "ip header cut", v: raw([]byte{0x45, 0, 0, 10, 0, 0, 0, 0, 64, 6}),
			want: "IN= OUT= TRUNCATED"},
		{name: "no packet at all", v: nil, mark: 1, want: "IN= OUT= TRUNCATED"},
		{name: "raw capture with input device: empty MAC", inDev: "tun0",
			v:    raw(tgtHandIPv4(5, 20, 0, 0, 47, nil, nil)),
			want: "IN=tun0 OUT= MAC= SRC=10.0.0.1 DST=10.0.0.2 LEN=20 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=47 "},
		{name: "raw capture with input device and macdecode: empty MAC", inDev: "tun0",
			v:    raw(tgtHandIPv4(5, 20, 0, 0, 47, nil, nil)),
			argv: []string{"--log-macdecode"},
			want: "IN=tun0 OUT= MAC= SRC=10.0.0.1 DST=10.0.0.2 LEN=20 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=47 "},
	}
	for _, tc := range tests {
		got := tgtLine(t, tc.v, tc.inDev, "", tc.mark, tc.argv...)
		if got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

// TestLOGLineICMPErrors covers the nested datagram of ICMP errors.
func TestLOGLineICMPErrors(t *testing.T) {
	const outer = "IN=eth0 OUT= MAC=52:54:00:aa:bb:cc:52:54:00:11:22:33:08:00 SRC=192.0.2.1 DST=192.0.2.10 LEN=%s TOS=0x00 PREC=0xC0 TTL=64 ID=1 PROTO=ICMP "
	head := func(l string) string { return strings.Replace(outer, "%s", l, 1) }
	const inner = "SRC=192.0.2.10 DST=192.0.2.1 LEN=%s TOS=0x00 PREC=0x00 TTL=64 ID=2 "
	ihead := func(l string) string { return strings.Replace(inner, "%s", l, 1) }

	// The usual 8 bytes of TCP header in the error: the inner dump stops at
	// INCOMPLETE, the outer line goes on (MTU, MARK).
	tcp8 := tgtPortUnreach(t, 4, layers.IPProtocolTCP, gopacket.Payload([]byte{0x13, 0x88, 0, 22, 0, 0, 0, 1}))
	got := tgtLine(t, tgtEthView(tcp8, 14), "eth0", "", 0x2a, "--log-tcp-sequence")
	want := head("56") + "TYPE=3 CODE=4 [" + ihead("28") + "PROTO=TCP INCOMPLETE [8 bytes] ] MTU=1400 MARK=0x2a "
	if got != want {
		t.Errorf("frag needed, inner tcp:\n got %q\nwant %q", got, want)
	}

	// Inner ICMP echo: printed, but an inner error is never recursed into.
	echo := tgtPortUnreach(t, 1, layers.IPProtocolICMPv4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 5, Seq: 6})
	got = tgtLine(t, tgtEthView(echo, 14), "eth0", "", 0)
	want = head("56") + "TYPE=3 CODE=1 [" + ihead("28") + "PROTO=ICMP TYPE=8 CODE=0 ID=5 SEQ=6 ] "
	if got != want {
		t.Errorf("host unreachable, inner echo:\n got %q\nwant %q", got, want)
	}

	// Time exceeded and redirect (with its gateway) are dumped the same way.
	for _, tc := range []struct {
		typ, code uint8
		gw        []byte
		mid       string
	}{
		{11, 0, []byte{0, 0, 0, 0}, "TYPE=11 CODE=0 "},
		{4, 0, []byte{0, 0, 0, 0}, "TYPE=4 CODE=0 "},
		{5, 1, []byte{192, 0, 2, 254}, "TYPE=5 CODE=1 GATEWAY=192.0.2.254 "},
	} {
		iip := tgtIPv4("192.0.2.10", "192.0.2.1", layers.IPProtocolUDP, 64, 2)
		innerBytes := tgtSerialize(t, iip, &layers.UDP{SrcPort: 5000, DstPort: 9})
		ip := tgtIPv4("192.0.2.1", "192.0.2.10", layers.IPProtocolICMPv4, 64, 1)
		ip.TOS = 0xc0
		icmpHdr := append([]byte{tc.typ, tc.code, 0, 0}, tc.gw...)
		frame := tgtSerialize(t, tgtEth(tgtMAC1, tgtMAC2), ip, gopacket.Payload(append(icmpHdr, innerBytes...)))
		got := tgtLine(t, tgtEthView(frame, 14), "eth0", "", 0)
		want := head("56") + tc.mid + "[" + ihead("28") + "PROTO=UDP SPT=5000 DPT=9 LEN=8 ] "
		if got != want {
			t.Errorf("type %d:\n got %q\nwant %q", tc.typ, got, want)
		}
	}

	// An inner header claiming 60 bytes of options: with --log-ip-options
	// the options are cut off ("TRUNCATED", no space); without, the UDP
	// offset lies past the end and the kernel's u32 byte count wraps.
	bad := tgtPortUnreach(t, 3, layers.IPProtocolUDP, &layers.UDP{SrcPort: 5000, DstPort: 9})
	bad[14+28] = 0x4f // inner version 4, IHL 15
	got = tgtLine(t, tgtEthView(bad, 14), "eth0", "", 0, "--log-ip-options")
	want = head("56") + "TYPE=3 CODE=3 [" + ihead("28") + "TRUNCATED] "
	if got != want {
		t.Errorf("inner options cut:\n got %q\nwant %q", got, want)
	}
	got = tgtLine(t, tgtEthView(bad, 14), "eth0", "", 0)
	want = head("56") + "TYPE=3 CODE=3 [" + ihead("28") + "PROTO=UDP INCOMPLETE [4294967264 bytes] ] "
	if got != want {
		t.Errorf("inner offset past the end:\n got %q\nwant %q", got, want)
	}
}

// TestLOGLineLinkLayer covers MAC=, --log-macdecode, VLAN and cooked captures.
func TestLOGLineLinkLayer(t *testing.T) {
	const rest = "SRC=198.51.100.7 DST=192.0.2.10 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=31337 DF PROTO=TCP SPT=51514 DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0 "
	syn := tgtSYN(t)
	dgram := syn[14:]

	// 802.1Q tag, priority 1, VLAN 100 (TCI 0x2064).
	vlan := append(append(append([]byte{}, syn[:12]...), 0x81, 0x00, 0x20, 0x64, 0x08, 0x00), dgram...)
	// Linux cooked captures (SLL, SLL2) of lo and of an Ethernet device.
	sll := func(hatype uint16) []byte {
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[2:], hatype)
		binary.BigEndian.PutUint16(h[4:], 6)
		binary.BigEndian.PutUint16(h[14:], 0x0800)
		return h
	}
	sll2 := func(hatype uint16) []byte {
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], 0x0800)
		binary.BigEndian.PutUint16(h[8:], hatype)
		h[11] = 6
		return h
	}
	tests := []struct {
		name string
		v    *packet.View
		argv []string
		want string
	}{
		{"macdecode", tgtEthView(syn, 14), []string{"--log-macdecode"},
			"IN=eth0 OUT= MACSRC=52:54:00:11:22:33 MACDST=52:54:00:aa:bb:cc MACPROTO=0800 " + rest},
		{"vlan", tgtEthView(vlan, 18), nil,
			"IN=eth0 OUT= MAC=52:54:00:aa:bb:cc:52:54:00:11:22:33:08:00 " + rest},
		{"vlan macdecode", tgtEthView(vlan, 18), []string{"--log-macdecode"},
			"IN=eth0 OUT= MACSRC=52:54:00:11:22:33 MACDST=52:54:00:aa:bb:cc VPROTO=8100 VID=8292 MACPROTO=0800 " + rest},
		{"cut ethernet header with macdecode prints nothing", &packet.View{LinkType: 1, Link: syn[:10], Network: dgram}, []string{"--log-macdecode"},
			"IN=eth0 OUT= " + rest},
		{"sll loopback", &packet.View{LinkType: 113, Link: sll(772), Network: dgram}, nil,
			"IN=eth0 OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00 " + rest},
		{"sll2 loopback with macdecode", &packet.View{LinkType: 276, Link: sll2(772), Network: dgram}, []string{"--log-macdecode"},
			"IN=eth0 OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00 " + rest},
		{"sll ethernet: destination unknown", &packet.View{LinkType: 113, Link: sll(1), Network: dgram}, nil,
			"IN=eth0 OUT= MAC= " + rest},
	}
	for _, tc := range tests {
		if got := tgtLine(t, tc.v, "eth0", "", 0, tc.argv...); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
	// No input device: no MAC part at all, even with --log-macdecode.
	if got, want := tgtLine(t, tgtEthView(syn, 14), "", "eth1", 0, "--log-macdecode"), "IN= OUT=eth1 "+rest; got != want {
		t.Errorf("output path:\n got %q\nwant %q", got, want)
	}
}

// TestLOGApplyEvents checks that several LOG rules on one packet keep their
// own lines, that Level is carried and that Reset recycles the space.
func TestLOGApplyEvents(t *testing.T) {
	v := tgtEthView(tgtSYN(t), 14)
	a, _ := buildTarget("LOG", Rule{}, "--log-prefix", "A ", "--log-level", "info")
	b, _ := buildTarget("LOG", Rule{}, "--log-prefix", "B ")
	c := &Context{Pkt: v, In: "eth0"}
	a.Apply(c)
	b.Apply(c)
	if len(c.Events) != 2 {
		t.Fatalf("%d events", len(c.Events))
	}
	if !strings.HasPrefix(string(c.Events[0].Text), "A IN=eth0 ") || c.Events[0].Level != 6 {
		t.Errorf("first event %q level %d", c.Events[0].Text, c.Events[0].Level)
	}
	if !strings.HasPrefix(string(c.Events[1].Text), "B IN=eth0 ") || c.Events[1].Level != 4 {
		t.Errorf("second event %q level %d", c.Events[1].Text, c.Events[1].Level)
	}
	// Appending to one event's text must not overwrite the next one.
	first := c.Events[0].Text
	_ = append(first, "XXXX"...)
	if !strings.HasPrefix(string(c.Events[1].Text), "B IN=eth0 ") {
		t.Errorf("event texts overlap: %q", c.Events[1].Text)
	}
	c.Reset()
	if len(c.Events) != 0 || len(c.scratch) != 0 {
		t.Errorf("Reset left %d events, %d scratch bytes", len(c.Events), len(c.scratch))
	}
}

// TestLOGApplyNoAlloc checks the steady state of the per-packet path.
func TestLOGApplyNoAlloc(t *testing.T) {
	v := tgtEthView(tgtPortUnreach(t, 4, layers.IPProtocolTCP, gopacket.Payload(make([]byte, 8))), 14)
	tg, err := buildTarget("LOG", Rule{}, "--log-prefix", "DROP: ", "--log-tcp-options", "--log-ip-options", "--log-tcp-sequence")
	if err != nil {
		t.Fatal(err)
	}
	c := &Context{}
	run := func() {
		c.Reset()
		c.Pkt, c.In, c.Mark = v, "eth0", 0xdead
		tg.Apply(c)
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("LOG Apply allocates %v times per packet", n)
	}
}

func BenchmarkLOGApply(b *testing.B) {
	v := tgtEthView(tgtSYN(b), 14)
	tg, err := buildTarget("LOG", Rule{}, "--log-prefix", "SSH-IN: ", "--log-tcp-options", "--log-tcp-sequence")
	if err != nil {
		b.Fatal(err)
	}
	c := &Context{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Reset()
		c.Pkt, c.In, c.Mark = v, "eth0", 1
		tg.Apply(c)
	}
}
