package matchers

import (
	"testing"

	"github.com/qtables/qtables/packet"
)

var multiportFmt = []fmtVector{
	{proto: "tcp", opts: "--dports 53,1024:65535", save: " --dports 53,1024:65535",
		listN: " multiport dports 53,1024:65535", list: " multiport dports domain,1024:65535"},
	{proto: "udp", opts: "! --sports 1,2", save: " ! --sports 1,2", listN: " multiport sports  !1,2"},
	{proto: "udp", opts: "--ports 1,2:5,domain", save: " --ports 1,2:5,53",
		listN: " multiport ports 1,2:5,53", list: " multiport ports 1,2:5,domain"},
	{proto: "tcp", opts: "! --ports 25,80:90", save: " ! --ports 25,80:90",
		listN: " multiport ports  !25,80:90", list: " multiport ports  !smtp,http:90"},
	{proto: "tcp", opts: "--source-ports 1,2", save: " --sports 1,2",
		listN: " multiport sports 1,2", list: " multiport sports tcpmux,2"},
	{proto: "tcp", opts: "--destination-ports 1,2", save: " --dports 1,2",
		listN: " multiport dports 1,2", list: " multiport dports tcpmux,2"},
	{proto: "tcp", opts: "--dports 0x50,http,smtp", save: " --dports 80,80,25",
		listN: " multiport dports 80,80,25", list: " multiport dports http,http,smtp"},
	// 15 slots: 15 ports, or a range ending in the 15th slot.
	{proto: "tcp", opts: "--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
		save:  " --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
		listN: " multiport dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
		list:  " multiport dports tcpmux,2,3,4,5,6,echo,8,discard,10,systat,12,daytime,14,netstat"},
	{proto: "tcp", opts: "--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14:15",
		save:  " --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14:15",
		listN: " multiport dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14:15",
		list:  " multiport dports tcpmux,2,3,4,5,6,echo,8,discard,10,systat,12,daytime,14:netstat"},
	{proto: "tcp", opts: "--dports 1:2,3:4,5:6,7:8,9:10,11:12,13:14,15",
		save:  " --dports 1:2,3:4,5:6,7:8,9:10,11:12,13:14,15",
		listN: " multiport dports 1:2,3:4,5:6,7:8,9:10,11:12,13:14,15",
		list:  " multiport dports tcpmux:2,3:4,5:6,echo:8,discard:10,systat:12,daytime:14,netstat"},
	{proto: "sctp", opts: "--dports 1,2", save: " --dports 1,2", listN: " multiport dports 1,2"},
	{proto: "sctp", opts: "--dports 5672", save: " --dports 5672", listN: " multiport dports 5672", list: " multiport dports amqp"},
	{proto: "dccp", opts: "--ports 1,2", save: " --ports 1,2", listN: " multiport ports 1,2"},
	{proto: "udplite", opts: "--ports 1", save: " --ports 1", listN: " multiport ports 1"},
}

var multiportErr = []errVector{
	{proto: "tcp", opts: "--dports 80:80", err: `invalid portrange "80:80"`},
	{proto: "tcp", opts: "--dports 5:4", err: "invalid portrange"},
	{proto: "tcp", opts: "--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", err: "too many ports specified"},
	{proto: "tcp", opts: "--dports 1:2,3:4,5:6,7:8,9:10,11:12,13:14,15:16", err: "too many ports specified"},
	{proto: "tcp", opts: "--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15:16", err: "too many ports specified"},
	{proto: "tcp", opts: "--dports 65536", err: `invalid port/service "65536"`},
	{proto: "tcp", opts: "--dports :5", err: `invalid port/service ""`},
	{proto: "tcp", opts: "--dports 5:", err: `invalid port/service ""`},
	{proto: "tcp", opts: "--dports 1,,2", err: `invalid port/service ""`},
	{proto: "tcp", opts: "--dports 1,", err: `invalid port/service ""`},
	{proto: "tcp", opts: `--dports ""`, err: `invalid port/service ""`},
	{proto: "tcp", opts: "--ports 1:2:3", err: `invalid port/service "2:3"`},
	{proto: "udplite", opts: "--dports 1,domain", err: `invalid port/service "domain"`},
	{proto: "udp", opts: "--dports ssh", err: `invalid port/service "ssh"`},
	{proto: "tcp", opts: "--dports 1 --sports 2", err: "cannot be used together"},
	{proto: "tcp", opts: "--dports 1 --dports 2", err: "only one --dports"},
	{proto: "tcp", opts: "", err: "one of --sports, --dports or --ports is required"},
	{proto: "", opts: "--dports 1", err: "multiport needs '-p tcp'"},
	{proto: "!tcp", opts: "--dports 1", err: "only works with TCP, UDP, UDPLITE, SCTP and DCCP"},
	{proto: "icmp", opts: "--dports 1", err: "only works with TCP"},
	{proto: "gre", opts: "--dports 1", err: "only works with TCP"},
}

func TestMultiportFormats(t *testing.T) {
	if _, ok := lookupService("amqp", "sctp"); !ok {
		t.Skip("/etc/services lacks the entries these vectors name")
	}
	runFmtVectors(t, "multiport", multiportFmt)
}

func TestMultiportErrors(t *testing.T) { runErrVectors(t, "multiport", multiportErr) }

func TestMultiportMatch(t *testing.T) {
	tcp := func(s, d uint16) pkt { return tcpPkt(s, d, 0) }
	dports := mustBuild(t, "multiport", ruleTCP, "--dports 22,80:90,443")
	runMatchCases(t, dports, []matchCase{
		{"22", tcp(1, 22), true, false},
		{"range start", tcp(1, 80), true, false},
		{"range inside", tcp(1, 85), true, false},
		{"range end", tcp(1, 90), true, false},
		{"after range", tcp(1, 91), false, false},
		{"443", tcp(1, 443), true, false},
		{"source port is not looked at", tcp(22, 1), false, false},
	})
	sports := mustBuild(t, "multiport", ruleTCP, "! --sports 1000:2000")
	runMatchCases(t, sports, []matchCase{
		{"inverted hit", tcp(1500, 1), false, false},
		{"inverted miss", tcp(999, 1500), true, false},
	})
	either := mustBuild(t, "multiport", ruleUDP, "--ports 53")
	runMatchCases(t, either, []matchCase{
		{"src", udpPkt(53, 1), true, false},
		{"dst", udpPkt(1, 53), true, false},
		{"neither", udpPkt(1, 2), false, false},
	})

	inv := mustBuild(t, "multiport", ruleTCP, "! --dports 22")
	frag := tcp(1, 80)
	frag.fragWord = 1
	short := tcp(1, 80)
	short.l4 = short.l4[:3]
	four := tcp(1, 80)
	four.l4 = four.l4[:4] // only the ports are needed
	runMatchCases(t, inv, []matchCase{
		{"fragment: no match even inverted", frag, false, false},
		{"3 bytes", short, false, true},
		{"4 bytes suffice", four, true, false},
	})

	// sctp and dccp carry their ports in the same first four bytes.
	sctp := mustBuild(t, "multiport", Rule{Proto: protoSCTP}, "--dports 5672")
	runMatchCases(t, sctp, []matchCase{{"sctp", pkt{proto: protoSCTP, l4: udpHdr(1, 5672)}, true, false}})
}

func TestMultiportMatchDoesNotAllocate(t *testing.T) {
	m := mustBuild(t, "multiport", ruleTCP, "--ports 1,2,3,4,5,6,7,8,9,10,11,12,13,100:200")
	c := ctxFor(tcpPkt(40000, 22, packet.TCPSyn).view())
	if n := testing.AllocsPerRun(100, func() { m.Match(c) }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}
