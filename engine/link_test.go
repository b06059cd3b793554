package engine

import (
	"net"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// TestLinkedStringRules: a parsed rule set's string matches share one
// automaton (Parse links them); the first rule whose pattern lies in the
// packet still decides, with --from/--to windows and --icase honoured.
func TestLinkedStringRules(t *testing.T) {
	rules := `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m string --string "alpha" --algo kmp -j DROP
-A FORWARD -m string --string "BETA" --algo bm --icase -j DROP
-A FORWARD -m string --string "gamma" --algo bm --from 60 -j DROP
-A FORWARD -m string --hex-string "|de ad be ef|" --algo kmp -j DROP
-A FORWARD -m string --string "delta" --algo bm --to 50 -j DROP
COMMIT
`
	_, p := mustLoad(t, rules)
	tp := p.Table("filter")
	dec, err := packet.NewDecoder(packet.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	// The UDP payload starts at byte 28 of the IP datagram.
	tests := []struct {
		payload string
		rule    int // deciding rule, 0 = policy
	}{
		{"xx alpha beta", 1},
		{"xx Beta alpha", 1}, // rule order decides, not position
		{"xx bEtA", 2},       // --icase
		{"gamma at 31", 0},   // before --from 60
		{strings.Repeat(".", 40) + "gamma", 3},
		{"\xde\xad\xbe\xef", 4},
		{"delta", 5},                           // within --to 50
		{strings.Repeat(".", 30) + "delta", 0}, // ends past --to 50
		{"nothing here", 0},
	}
	for _, tt := range tests {
		frame := udpPayloadFrame(t, []byte(tt.payload))
		var v packet.View
		dec.Decode(frame, &v)
		var c matchers.Context
		c.Pkt, c.Hook = &v, matchers.HookForward
		res := tp.Eval(&c, nil)
		if res.Rule != tt.rule {
			t.Errorf("payload %q: decided by %s:%d, want rule %d", tt.payload, res.Chain, res.Rule, tt.rule)
		}
	}
}

func udpPayloadFrame(t *testing.T, payload []byte) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2)}
	udp := &layers.UDP{SrcPort: 1000, DstPort: 2000}
	udp.SetNetworkLayerForChecksum(ip)
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
