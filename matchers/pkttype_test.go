package matchers

import (
	"testing"

	"github.com/qtables/qtables/packet"
)

var pkttypeFmt = []fmtVector{
	{opts: "--pkt-type host", save: " --pkt-type unicast", listN: " PKTTYPE = unicast"},
	{opts: "--pkt-type unicast", save: " --pkt-type unicast", listN: " PKTTYPE = unicast"},
	{opts: "--pkt-type UNICAST", save: " --pkt-type unicast", listN: " PKTTYPE = unicast"},
	{opts: "! --pkt-type bcast", save: " ! --pkt-type broadcast", listN: " PKTTYPE != broadcast"},
	{opts: "--pkt-type Broadcast", save: " --pkt-type broadcast", listN: " PKTTYPE = broadcast"},
	{opts: "--pkt-type mcast", save: " --pkt-type multicast", listN: " PKTTYPE = multicast"},
	{opts: "--pkt-type OtherHost", save: " --pkt-type otherhost", listN: " PKTTYPE = otherhost"},
}

var pkttypeErr = []errVector{
	{opts: "--pkt-type foo", err: `bad packet type "foo"`},
	{opts: "--pkt-type uni", err: `bad packet type "uni"`},
	// strcasecmp folds ASCII only: "ſ" is not "s".
	{opts: "--pkt-type broadcaſt", err: `bad packet type "broadcaſt"`},
	// Commented out of iptables' table; 1.8.9 says "Bad packet type".
	{opts: "--pkt-type outgoing", err: `bad packet type "outgoing"`},
	{opts: "", err: "--pkt-type must be specified"},
}

func TestPkttypeFormats(t *testing.T) { runFmtVectors(t, "pkttype", pkttypeFmt) }

func TestPkttypeErrors(t *testing.T) { runErrVectors(t, "pkttype", pkttypeErr) }

func TestPkttypeMatch(t *testing.T) {
	at := func(typ uint8, dst string) pkt { return pkt{proto: 17, pktType: typ, dst: dst, l4: udpHdr(1, 2)} }
	cases := []struct {
		opts string
		p    pkt
		want bool
	}{
		{"--pkt-type unicast", at(packet.PacketHost, ""), true},
		{"--pkt-type unicast", at(packet.PacketBroadcast, ""), false},
		{"! --pkt-type unicast", at(packet.PacketBroadcast, ""), true},
		{"--pkt-type broadcast", at(packet.PacketBroadcast, "255.255.255.255"), true},
		{"--pkt-type multicast", at(packet.PacketMulticast, "224.0.0.1"), true},
		{"--pkt-type otherhost", at(packet.PacketOtherHost, ""), true},
		{"--pkt-type otherhost", at(packet.PacketOutgoing, ""), false},
		// Looped-back frames are classified by the IPv4 destination.
		{"--pkt-type multicast", at(packetLoopback, "239.1.2.3"), true},
		{"--pkt-type broadcast", at(packetLoopback, "10.0.0.255"), true},
		{"--pkt-type unicast", at(packetLoopback, "10.0.0.2"), false},
	}
	for _, tc := range cases {
		m := mustBuild(t, "pkttype", ruleAny, tc.opts)
		if got := m.Match(ctxFor(tc.p.view())); got != tc.want {
			t.Errorf("%s on pkt_type %d dst %s = %v", tc.opts, tc.p.pktType, tc.p.dst, got)
		}
	}
}
