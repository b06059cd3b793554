package matchers

import (
	"testing"

	"github.com/qtables/qtables/packet"
)

// Vectors checked against iptables 1.8.9 (nf_tables) in a network
// namespace; see checkLive. Spec §5.1 and §9 vectors are included.
var tcpFmt = []fmtVector{
	{proto: "tcp", opts: "--syn", save: " --tcp-flags FIN,SYN,RST,ACK SYN",
		listN: " tcp flags:0x17/0x02", list: " tcp flags:FIN,SYN,RST,ACK/SYN"},
	{proto: "tcp", opts: "! --syn", save: " ! --tcp-flags FIN,SYN,RST,ACK SYN",
		listN: " tcp flags:!0x17/0x02", list: " tcp flags:!FIN,SYN,RST,ACK/SYN"},
	{proto: "tcp", opts: "--sport 1024:", save: " --sport 1024:65535", listN: " tcp spts:1024:65535"},
	{proto: "tcp", opts: "--sport :4", save: " --sport 0:4", listN: " tcp spts:0:4"},
	{proto: "tcp", opts: "--sport 4:4", save: " --sport 4", listN: " tcp spt:4"},
	{proto: "tcp", opts: "--sport :", save: "", listN: " tcp"},
	{proto: "tcp", opts: "", save: "", listN: " tcp"},
	{proto: "tcp", opts: "--dport 1", save: " --dport 1", listN: " tcp dpt:1", list: " tcp dpt:tcpmux"},
	{proto: "tcp", opts: "--sport 22 --dport 80 --tcp-flags ALL NONE --tcp-option 8",
		save:  " --sport 22 --dport 80 --tcp-option 8 --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE",
		listN: " tcp spt:22 dpt:80 option=8 flags:0x3F/0x00",
		list:  " tcp spt:ssh dpt:http option=8 flags:FIN,SYN,RST,PSH,ACK,URG/NONE"},
	{proto: "tcp", opts: "! --sport 22 ! --dport 80:90 ! --tcp-flags SYN,ACK ACK ! --tcp-option 8",
		save:  " ! --sport 22 ! --dport 80:90 ! --tcp-option 8 ! --tcp-flags SYN,ACK ACK",
		listN: " tcp spt:!22 dpts:!80:90 option=!8 flags:!0x12/0x10",
		list:  " tcp spt:!ssh dpts:!http:90 option=!8 flags:!SYN,ACK/ACK"},
	{proto: "tcp", opts: "--source-port ssh --destination-port http", save: " --sport 22 --dport 80",
		listN: " tcp spt:22 dpt:80", list: " tcp spt:ssh dpt:http"},
	{proto: "tcp", opts: "--sport 0x50", save: " --sport 80", listN: " tcp spt:80", list: " tcp spt:http"},
	{proto: "tcp", opts: "--sport 010", save: " --sport 8", listN: " tcp spt:8"},
	{proto: "tcp", opts: "--sport +80", save: " --sport 80", listN: " tcp spt:80", list: " tcp spt:http"},
	{proto: "tcp", opts: "--sport smtp", save: " --sport 25", listN: " tcp spt:25", list: " tcp spt:smtp"},
	{proto: "tcp", opts: "--dport 25:smtp", save: " --dport 25", listN: " tcp dpt:25", list: " tcp dpt:smtp"},
	{proto: "tcp", opts: "--tcp-flags ALL ALL", save: " --tcp-flags FIN,SYN,RST,PSH,ACK,URG FIN,SYN,RST,PSH,ACK,URG",
		listN: " tcp flags:0x3F/0x3F", list: " tcp flags:FIN,SYN,RST,PSH,ACK,URG/FIN,SYN,RST,PSH,ACK,URG"},
	{proto: "tcp", opts: "--tcp-flags syn,ack ack", save: " --tcp-flags SYN,ACK ACK",
		listN: " tcp flags:0x12/0x10", list: " tcp flags:SYN,ACK/ACK"},
	{proto: "tcp", opts: "--tcp-flags SYN,,ACK SYN", save: " --tcp-flags SYN,ACK SYN",
		listN: " tcp flags:0x12/0x02", list: " tcp flags:SYN,ACK/SYN"},
	{proto: "tcp", opts: `--tcp-flags SYN ""`, save: " --tcp-flags SYN NONE",
		listN: " tcp flags:0x02/0x00", list: " tcp flags:SYN/NONE"},
	{proto: "tcp", opts: "--tcp-option 0x10", save: " --tcp-option 16", listN: " tcp option=16"},
	{proto: "tcp", opts: "--tcp-option 255", save: " --tcp-option 255", listN: " tcp option=255"},
	// A zero mask is no constraint and is not printed (legacy keeps
	// "-m tcp"; nf_tables drops the match altogether).
	{proto: "tcp", opts: "--tcp-flags NONE SYN", save: "", listN: " tcp", legacy: true},
	{proto: "tcp", opts: "! --tcp-flags NONE NONE", save: " ! --tcp-flags NONE NONE",
		listN: " tcp flags:!0x00/0x00", list: " tcp flags:!NONE/NONE", legacy: true},
	{proto: "tcp", opts: "! --sport 0:65534", save: " ! --sport 0:65534", listN: " tcp spts:!0:65534", legacy: true},
	// iptables 1.8.9 (legacy) lists it but drops it from iptables-save,
	// turning a never-matching rule into an always-matching one on restore;
	// 1.8.11 (spec §5.1, §9) saves it.
	{proto: "tcp", opts: "! --dport :", save: " ! --dport 0:65535", listN: " tcp dpts:!0:65535",
		dev: "iptables 1.8.9 drops an inverted full range from save output"},
}

var tcpErr = []errVector{
	{proto: "tcp", opts: "--sport 4:3", err: "invalid portrange (min > max)"},
	{proto: "tcp", opts: "--sport 65536", err: `invalid port/service "65536"`},
	{proto: "tcp", opts: "--sport -1", err: `invalid port/service "-1"`},
	{proto: "tcp", opts: "--sport 80:80:90", err: `invalid port/service "80:90"`},
	{proto: "tcp", opts: "--sport foo", err: `invalid port/service "foo"`},
	{proto: "tcp", opts: `--sport ""`, err: "invalid port/service"},
	{proto: "tcp", opts: "--sport 0x", err: "invalid port/service"},
	{proto: "", opts: "--dport 1", err: "requires '-p tcp'"},
	{proto: "udp", opts: "--dport 1", err: "requires '-p tcp'"},
	{proto: "!tcp", opts: "--dport 1", err: "requires '-p tcp'",
		dev: "nf_tables accepts ! -p tcp -m tcp (legacy and the kernel refuse it)"},
	{proto: "tcp", opts: "--tcp-flags SYN,FOO SYN", err: `unknown TCP flag "FOO"`},
	{proto: "tcp", opts: "--tcp-flags SYN,ACK,CWR SYN", err: `unknown TCP flag "CWR"`},
	// Flag names fold ASCII case only (strcasecmp): "ſ" is not "s".
	{proto: "tcp", opts: "--tcp-flags ſYN SYN", err: `unknown TCP flag "ſYN"`},
	{proto: "tcp", opts: "--tcp-flags SYN !ACK", err: "requires two args"},
	{proto: "tcp", opts: "--tcp-flags SYN -ACK", err: "requires two args"},
	{proto: "tcp", opts: "--syn --tcp-flags SYN SYN", err: "only one of --syn or --tcp-flags"},
	{proto: "tcp", opts: "--tcp-flags SYN SYN --syn", err: "only one of --syn or --tcp-flags"},
	{proto: "tcp", opts: "--tcp-option 0", err: "invalid TCP option"},
	{proto: "tcp", opts: "--tcp-option 256", err: "invalid TCP option"},
	{proto: "tcp", opts: "--sport 1 --source-port 2", err: "only one --sport"},
}

func TestTCPFormats(t *testing.T) {
	if _, ok := lookupService("ssh", "tcp"); !ok {
		t.Skip("/etc/services lacks ssh/tcp; names in List cannot be checked")
	}
	runFmtVectors(t, "tcp", tcpFmt)
}

func TestTCPErrors(t *testing.T) { runErrVectors(t, "tcp", tcpErr) }

func TestTCPBuildIsRepeatable(t *testing.T) {
	// The engine builds one match per address pair from one builder.
	ext, _ := LookupMatch("tcp")
	b := ext.New()
	if err := b.Parse("dport", []string{"22"}, false); err != nil {
		t.Fatal(err)
	}
	m1, err1 := b.Build(&ruleTCP)
	m2, err2 := b.Build(&ruleTCP)
	if err1 != nil || err2 != nil || saveOf(m1) != " --dport 22" || saveOf(m2) != " --dport 22" {
		t.Fatalf("Build twice: %v %v %q %q", err1, err2, saveOf(m1), saveOf(m2))
	}
}

func tcpPkt(sport, dport uint16, flags uint8, opts ...byte) pkt {
	return pkt{proto: packet.ProtoTCP, l4: tcpHdr(sport, dport, flags, opts...)}
}

func TestTCPMatchPorts(t *testing.T) {
	m := mustBuild(t, "tcp", ruleTCP, "--sport 1024: --dport 22")
	runMatchCases(t, m, []matchCase{
		{"hit", tcpPkt(40000, 22, packet.TCPSyn), true, false},
		{"hit range start", tcpPkt(1024, 22, 0), true, false},
		{"sport below range", tcpPkt(1023, 22, 0), false, false},
		{"dport differs", tcpPkt(40000, 23, 0), false, false},
	})
	inv := mustBuild(t, "tcp", ruleTCP, "! --dport 20:25")
	runMatchCases(t, inv, []matchCase{
		{"outside inverted range", tcpPkt(1, 80, 0), true, false},
		{"inside inverted range", tcpPkt(1, 22, 0), false, false},
		{"edge", tcpPkt(1, 25, 0), false, false},
	})
	never := mustBuild(t, "tcp", ruleTCP, "! --sport :")
	runMatchCases(t, never, []matchCase{{"inverted full range", tcpPkt(1, 2, 0), false, false}})
}

func TestTCPMatchReadsHeaderBytes(t *testing.T) {
	// The ports come from the header bytes, not the View's convenience
	// fields (which a caller may leave unset).
	m := mustBuild(t, "tcp", ruleTCP, "--dport 443")
	p := tcpPkt(1, 443, 0).view()
	p.DstPort, p.HasPorts = 80, true
	if !m.Match(ctxFor(p)) {
		t.Fatal("dport 443 in the header did not match")
	}
}

func TestTCPMatchFlags(t *testing.T) {
	syn := mustBuild(t, "tcp", ruleTCP, "--syn")
	notSyn := mustBuild(t, "tcp", ruleTCP, "! --syn")
	cases := []struct {
		name  string
		flags uint8
		isSyn bool
	}{
		{"SYN", packet.TCPSyn, true},
		{"SYN+ECE+CWR", packet.TCPSyn | packet.TCPEce | packet.TCPCwr, true}, // not in the mask
		{"SYN+PSH", packet.TCPSyn | packet.TCPPsh, true},                     // PSH not in --syn's mask
		{"SYN+ACK", packet.TCPSyn | packet.TCPAck, false},
		{"SYN+RST", packet.TCPSyn | packet.TCPRst, false},
		{"SYN+FIN", packet.TCPSyn | packet.TCPFin, false},
		{"ACK", packet.TCPAck, false},
		{"none", 0, false},
	}
	for _, tc := range cases {
		if got := syn.Match(ctxFor(tcpPkt(1, 2, tc.flags).view())); got != tc.isSyn {
			t.Errorf("--syn on %s = %v", tc.name, got)
		}
		if got := notSyn.Match(ctxFor(tcpPkt(1, 2, tc.flags).view())); got == tc.isSyn {
			t.Errorf("! --syn on %s = %v", tc.name, got)
		}
	}
	xmas := mustBuild(t, "tcp", ruleTCP, "--tcp-flags ALL FIN,PSH,URG")
	runMatchCases(t, xmas, []matchCase{
		{"xmas", tcpPkt(1, 2, packet.TCPFin|packet.TCPPsh|packet.TCPUrg), true, false},
		{"xmas+ack", tcpPkt(1, 2, packet.TCPFin|packet.TCPPsh|packet.TCPUrg|packet.TCPAck), false, false},
	})
	never := mustBuild(t, "tcp", ruleTCP, "! --tcp-flags NONE NONE")
	runMatchCases(t, never, []matchCase{{"inverted empty mask", tcpPkt(1, 2, packet.TCPSyn), false, false}})
}

func TestTCPMatchOption(t *testing.T) {
	const mss, sack, ts = 2, 4, 8
	m := mustBuild(t, "tcp", ruleTCP, "--tcp-option 8")
	inv := mustBuild(t, "tcp", ruleTCP, "! --tcp-option 8")
	synOpts := []byte{mss, 4, 0x05, 0xb4, sack, 2, ts, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}
	cases := []struct {
		name      string
		p         pkt
		has, drop bool
	}{
		{"SYN options with timestamp", tcpPkt(1, 2, packet.TCPSyn, synOpts...), true, false},
		{"no options", tcpPkt(1, 2, 0), false, false},
		{"MSS only", tcpPkt(1, 2, 0, mss, 4, 5, 0xb4), false, false},
		{"NOPs then TS", tcpPkt(1, 2, 0, 1, 1, ts, 10, 0, 0, 0, 0, 0, 0, 0, 0), true, false},
		// Kind 0 (end of list) does not stop the kernel's walk.
		{"TS after EOL", tcpPkt(1, 2, 0, 0, ts, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0), true, false},
		// A zero length byte advances by one, landing on the 8.
		{"zero length", tcpPkt(1, 2, 0, 30, 0, ts, 2), true, false},
		// The 8 here is a length byte, skipped over.
		{"8 as a length", tcpPkt(1, 2, 0, 30, 8, 0, 0, 0, 0, 0, 0), false, false},
	}
	for _, tc := range cases {
		c := ctxFor(tc.p.view())
		if got := m.Match(c); got != tc.has || c.Hotdrop {
			t.Errorf("--tcp-option 8 on %s = %v hotdrop %v", tc.name, got, c.Hotdrop)
		}
		c = ctxFor(tc.p.view())
		if got := inv.Match(c); got == tc.has || c.Hotdrop {
			t.Errorf("! --tcp-option 8 on %s = %v hotdrop %v", tc.name, got, c.Hotdrop)
		}
	}

	// Data offset below 5 words, or options cut off: hotdrop, even inverted.
	bad := tcpPkt(1, 2, 0)
	bad.l4[12] = 4 << 4
	short := tcpPkt(1, 2, 0, ts, 10, 0, 0, 0, 0, 0, 0, 0, 0)
	short.l4 = short.l4[:26]
	for _, p := range []pkt{bad, short} {
		for _, mm := range []Match{m, inv} {
			c := ctxFor(p.view())
			if mm.Match(c) || !c.Hotdrop {
				t.Errorf("%q on a broken option area: want hotdrop", saveOf(mm))
			}
		}
	}
	// Without an option test, a bad data offset is not looked at.
	plain := mustBuild(t, "tcp", ruleTCP, "--dport 2")
	if c := ctxFor(bad.view()); !plain.Match(c) || c.Hotdrop {
		t.Error("--dport 2 with data offset 4: want match without hotdrop")
	}
}

func TestTCPMatchFragmentsAndShortHeaders(t *testing.T) {
	m := mustBuild(t, "tcp", ruleTCP, "! --dport 22")
	frag := func(word uint16) pkt { p := tcpPkt(1, 80, 0); p.fragWord = word; return p }
	short := tcpPkt(1, 80, 0)
	short.l4 = short.l4[:19]
	runMatchCases(t, m, []matchCase{
		{"unfragmented", frag(0), true, false},
		{"first fragment (MF)", frag(packet.IPv4MF), true, false},
		{"DF", frag(packet.IPv4DF), true, false},
		{"offset 1 is an attack", frag(1), false, true},
		{"offset 1 with MF", frag(packet.IPv4MF | 1), false, true},
		{"later fragment", frag(2), false, false},
		{"last fragment", frag(185), false, false},
		{"19-byte header", short, false, true},
		{"no header", pkt{proto: packet.ProtoTCP}, false, true},
	})
}

func BenchmarkTCPMatch(b *testing.B) {
	m := mustBuild(b, "tcp", ruleTCP, "--sport 1024:65535 ! --dport 80:90 --syn --tcp-option 8")
	opts := []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}
	c := ctxFor(tcpPkt(40000, 22, packet.TCPSyn, opts...).view())
	if !m.Match(c) {
		b.Fatal("benchmark packet does not match")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Hotdrop = false
		if !m.Match(c) {
			b.Fatal("miss")
		}
	}
}

func TestTCPMatchDoesNotAllocate(t *testing.T) {
	m := mustBuild(t, "tcp", ruleTCP, "--sport 1024:65535 --syn --tcp-option 8")
	c := ctxFor(tcpPkt(40000, 22, packet.TCPSyn, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0).view())
	if n := testing.AllocsPerRun(100, func() { m.Match(c) }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}
