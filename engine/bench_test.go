package engine

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// ruleset100 is a 100-rule FORWARD chain of the shapes real ACLs have:
// prefixes, protocols, port matches, a user chain; the benchmark packet
// matches none of the first 99 rules, so every rule is evaluated.
func ruleset100() string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:WEB - [0:0]\n")
	for i := 0; i < 98; i++ {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "-A FORWARD -s 10.%d.0.0/16 -d 192.0.2.%d/32 -p tcp -m tcp --dport %d -j ACCEPT\n", i, i, 1000+i)
		case 1:
			fmt.Fprintf(&b, "-A FORWARD -d 198.51.%d.0/24 -p udp -m udp --dport 53 -j ACCEPT\n", i)
		case 2:
			fmt.Fprintf(&b, "-A FORWARD -i eth0 -p tcp -m multiport --dports %d,%d,%d -j DROP\n", 2000+i, 3000+i, 4000+i)
		case 3:
			fmt.Fprintf(&b, "-A FORWARD -s 172.16.%d.0/24 -p icmp -m icmp --icmp-type 8 -j ACCEPT\n", i)
		}
	}
	b.WriteString("-A FORWARD -p tcp -m tcp --dport 443 -j WEB\n")
	b.WriteString("-A FORWARD -j DROP\n")
	b.WriteString("-A WEB -m length --length 0:1500 -j ACCEPT\n")
	b.WriteString("COMMIT\n")
	return b.String()
}

func benchFrame(tb testing.TB) []byte {
	buf := gopacket.NewSerializeBuffer()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IPv4(10, 200, 1, 2), DstIP: net.IPv4(192, 0, 2, 200)}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true, Window: 64240}
	tcp.SetNetworkLayerForChecksum(ip)
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4},
		ip, tcp, gopacket.Payload(make([]byte, 100)))
	if err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkDecodeEval100 is decode plus evaluation of one packet through a
// 100-rule chain: the per-packet cost of the offline and live paths. It
// must report 0 allocs/op.
func BenchmarkDecodeEval100(b *testing.B) {
	_, p := mustLoad(b, ruleset100())
	tp := p.Table("filter")
	frame := benchFrame(b)
	dec, err := packet.NewDecoder(1)
	if err != nil {
		b.Fatal(err)
	}
	var v packet.View
	var c matchers.Context
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dec.Decode(frame, &v)
		c.Reset()
		c.Pkt, c.Hook, c.In, c.Out = &v, matchers.HookForward, "eth1", "eth2"
		if r := tp.Eval(&c, nil); r.Chain != "WEB" {
			b.Fatalf("decided by %s:%d", r.Chain, r.Rule)
		}
	}
}

func TestDecodeEval100Decides(t *testing.T) {
	// The benchmark's packet really walks the whole chain into WEB.
	rs, p := mustLoad(t, ruleset100())
	dec, _ := packet.NewDecoder(1)
	var v packet.View
	dec.Decode(benchFrame(t), &v)
	var c matchers.Context
	c.Pkt, c.Hook, c.In = &v, matchers.HookForward, "eth1"
	r := p.Table("filter").Eval(&c, nil)
	if r.Verdict != matchers.Accept || r.Chain != "WEB" || r.Rule != 1 {
		t.Fatalf("got %v %s:%d", r.Verdict, r.Chain, r.Rule)
	}
	if n := len(rs.Table("filter").Chain("FORWARD").Rules); n != 100 {
		t.Fatalf("%d rules", n)
	}
}
