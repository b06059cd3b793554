package matchers

import (
	"testing"

	"github.com/qtables/qtables/packet"
)

var udpFmt = []fmtVector{
	{proto: "udp", opts: "--dport 4:4", save: " --dport 4", listN: " udp dpt:4"},
	{proto: "udp", opts: "--sport 53 --dport 1024:", save: " --sport 53 --dport 1024:65535",
		listN: " udp spt:53 dpts:1024:65535", list: " udp spt:domain dpts:1024:65535"},
	{proto: "udp", opts: "! --sport 53 ! --dport 1:2", save: " ! --sport 53 ! --dport 1:2",
		listN: " udp spt:!53 dpts:!1:2", list: " udp spt:!domain dpts:!1:2"},
	{proto: "udp", opts: "--source-port domain", save: " --sport 53", listN: " udp spt:53", list: " udp spt:domain"},
	{proto: "udp", opts: "--sport :", save: "", listN: " udp"},
	{proto: "udp", opts: "--sport :4", save: " --sport 0:4", listN: " udp spts:0:4"},
	{proto: "udp", opts: "--sport 5:", save: " --sport 5:65535", listN: " udp spts:5:65535"},
	{proto: "udp", opts: "--sport domain:80", save: " --sport 53:80", listN: " udp spts:53:80", list: " udp spts:domain:80"},
	// udp parses ports differently from tcp in iptables 1.8.9: decimal
	// only, names of any protocol, reversed ranges accepted.
	{proto: "udp", opts: "--dport http", save: " --dport 80", listN: " udp dpt:80"},
	{proto: "udp", opts: `--sport " 80"`, save: " --sport 80", listN: " udp spt:80"},
	{proto: "udp", opts: "--dport 4:3", save: " --dport 4:3", listN: " udp dpts:4:3"},
	{proto: "udp", opts: "! --sport :", save: " ! --sport 0:65535", listN: " udp spts:!0:65535",
		dev: "iptables 1.8.9 drops an inverted full range from save output"},
}

var udpErr = []errVector{
	{proto: "udp", opts: "--sport 0x50", err: "does not resolve"},
	{proto: "udp", opts: "--sport -1", err: "does not resolve"},
	{proto: "udp", opts: "--sport 1:2:3", err: "too many components"},
	{proto: "udp", opts: "--sport nosuchservice", err: "does not resolve"},
	{proto: "udp", opts: "--sport 65536", err: "must be 0..65535",
		dev: "iptables 1.8.9 wraps 65536 to port 0"},
	{proto: "tcp", opts: "--dport 1", err: "requires '-p udp'"},
	{proto: "udplite", opts: "--dport 1", err: "requires '-p udp'"},
	{proto: "", opts: "--dport 1", err: "requires '-p udp'"},
	{proto: "udp", opts: "--dport 1 --destination-port 2", err: "only one --dport"},
}

func TestUDPFormats(t *testing.T) {
	if _, ok := lookupService("domain", "udp"); !ok {
		t.Skip("/etc/services lacks domain/udp")
	}
	runFmtVectors(t, "udp", udpFmt)
}

func TestUDPErrors(t *testing.T) { runErrVectors(t, "udp", udpErr) }

func udpPkt(sport, dport uint16) pkt { return pkt{proto: packet.ProtoUDP, l4: udpHdr(sport, dport)} }

func TestUDPMatch(t *testing.T) {
	m := mustBuild(t, "udp", ruleUDP, "--dport 53 ! --sport 0:1023")
	frag := udpPkt(5353, 53)
	frag.fragWord = 1 // offset 1 is only an attack for tcp
	short := udpPkt(5353, 53)
	short.l4 = short.l4[:7]
	runMatchCases(t, m, []matchCase{
		{"hit", udpPkt(5353, 53), true, false},
		{"privileged sport", udpPkt(53, 53), false, false},
		{"other dport", udpPkt(5353, 54), false, false},
		{"first fragment", func() pkt { p := udpPkt(5353, 53); p.fragWord = packet.IPv4MF; return p }(), true, false},
		{"fragment offset 1", frag, false, false},
		{"7-byte header", short, false, true},
	})
	rev := mustBuild(t, "udp", ruleUDP, "--dport 4:3")
	runMatchCases(t, rev, []matchCase{{"reversed range", udpPkt(1, 3), false, false}, {"reversed range 4", udpPkt(1, 4), false, false}})
	revInv := mustBuild(t, "udp", ruleUDP, "! --dport 4:3")
	runMatchCases(t, revInv, []matchCase{{"inverted reversed range", udpPkt(1, 4), true, false}})
}

func TestUDPMatchDoesNotAllocate(t *testing.T) {
	m := mustBuild(t, "udp", ruleUDP, "--dport 53")
	c := ctxFor(udpPkt(1, 53).view())
	if n := testing.AllocsPerRun(100, func() { m.Match(c) }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}
