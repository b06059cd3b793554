package bench

import (
	"bytes"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// TestEncodeFrame decodes generated frames with gopacket, an independent
// decoder, and checks every field and checksum.
func TestEncodeFrame(t *testing.T) {
	for _, tc := range []struct {
		tu   Tuple
		size int
	}{
		{Tuple{Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("192.0.2.9"), Proto: 6, SPort: 40000, DPort: 443, HasPorts: true}, 60},
		{Tuple{Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("192.0.2.9"), Proto: 6, SPort: 1, DPort: 65535, HasPorts: true}, 1514},
		{Tuple{Src: netip.MustParseAddr("172.16.0.1"), Dst: netip.MustParseAddr("8.8.8.8"), Proto: 17, SPort: 5353, DPort: 53, HasPorts: true}, 590},
		{Tuple{Src: netip.MustParseAddr("172.16.0.1"), Dst: netip.MustParseAddr("8.8.8.8"), Proto: 1}, 98},
		{Tuple{Src: netip.MustParseAddr("1.1.1.1"), Dst: netip.MustParseAddr("2.2.2.2"), Proto: 47}, 0},
	} {
		for _, seq := range []uint32{0, 5} {
			frame := EncodeFrame(&tc.tu, tc.size, seq)
			if tc.size > 0 && len(frame) != tc.size {
				t.Errorf("%+v: frame is %d bytes, want %d", tc.tu, len(frame), tc.size)
			}
			p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
			if el := p.ErrorLayer(); el != nil {
				t.Fatalf("%+v: gopacket: %v", tc.tu, el.Error())
			}
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip == nil {
				t.Fatalf("%+v: no IPv4 layer", tc.tu)
			}
			if ip.SrcIP.String() != tc.tu.Src.String() || ip.DstIP.String() != tc.tu.Dst.String() || uint8(ip.Protocol) != tc.tu.Proto || int(ip.Length) != len(frame)-14 || ip.TTL != 64 {
				t.Errorf("%+v: IPv4 header %v %v proto %d len %d ttl %d", tc.tu, ip.SrcIP, ip.DstIP, ip.Protocol, ip.Length, ip.TTL)
			}
			// Reserialising with checksum computation must reproduce the
			// bytes: our checksums are right.
			check := func(l gopacket.SerializableLayer, rest ...gopacket.SerializableLayer) {
				buf := gopacket.NewSerializeBuffer()
				all := append([]gopacket.SerializableLayer{l}, rest...)
				if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, all...); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf.Bytes(), frame[14:]) {
					t.Errorf("%+v seq %d: checksums differ from gopacket's\n got %x\nwant %x", tc.tu, seq, frame[14:], buf.Bytes())
				}
			}
			switch tc.tu.Proto {
			case 6:
				tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if uint16(tcp.SrcPort) != tc.tu.SPort || uint16(tcp.DstPort) != tc.tu.DPort || tcp.SYN != (seq == 0) || tcp.ACK != (seq != 0) {
					t.Errorf("%+v: TCP %v -> %v syn %v ack %v", tc.tu, tcp.SrcPort, tcp.DstPort, tcp.SYN, tcp.ACK)
				}
				tcp.SetNetworkLayerForChecksum(ip)
				check(ip, tcp, gopacket.Payload(tcp.Payload))
			case 17:
				udp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
				if uint16(udp.SrcPort) != tc.tu.SPort || uint16(udp.DstPort) != tc.tu.DPort {
					t.Errorf("%+v: UDP %v -> %v", tc.tu, udp.SrcPort, udp.DstPort)
				}
				udp.SetNetworkLayerForChecksum(ip)
				check(ip, udp, gopacket.Payload(udp.Payload))
			case 1:
				icmp := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
				if icmp.TypeCode.Type() != 8 {
					t.Errorf("ICMP type %d", icmp.TypeCode.Type())
				}
				check(ip, icmp, gopacket.Payload(icmp.Payload))
			default:
				check(ip, gopacket.Payload(ip.Payload))
			}
		}
	}
}

func genSet(t testing.TB, kind string, n int) []Filter {
	fs, err := GenerateFilters(RuleSpec{Kind: kind, Rules: n, Seed: 9, Actions: "accept"})
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestTrafficAimsAtEveryFilter(t *testing.T) {
	fs := genSet(t, "acl", 3000)
	sp := DefaultTraffic()
	ps := sp.Generate(fs)
	if len(ps) < 10000 {
		t.Fatalf("%d packets, want at least 10000", len(ps))
	}
	aimed := make([]bool, len(fs))
	miss := 0
	for _, p := range ps {
		if p.Aim < 0 {
			miss++
			if k := FirstMatch(fs, &p.Tuple); k >= 0 {
				t.Logf("miss packet matched filter %d (allowed when no miss is found in a few tries)", k)
			}
			continue
		}
		aimed[p.Aim] = true
		if !fs[p.Aim].Matches(&p.Tuple) {
			t.Fatalf("packet aimed at filter %d does not match it: %+v vs %+v", p.Aim, p.Tuple, fs[p.Aim])
		}
	}
	for i, a := range aimed {
		if !a {
			t.Fatalf("no packet aimed at filter %d", i)
		}
	}
	share := float64(miss) / float64(len(ps))
	if share < 0.02 || share > 0.10 {
		t.Errorf("miss share %.3f, want about 0.05", share)
	}
	// Same spec, same packets.
	if again := sp.Generate(fs); !reflect.DeepEqual(again, ps) {
		t.Error("traffic is not deterministic")
	}
}

func TestTrafficLocalityAndSizes(t *testing.T) {
	fs := genSet(t, "fw", 50)
	sp, err := ParseTraffic("packets=4000,flow=8,active=4,sizes=100:1000,miss=0,seed=3")
	if err != nil {
		t.Fatal(err)
	}
	ps := sp.Generate(fs)
	if len(ps) != 4000 {
		t.Fatalf("%d packets", len(ps))
	}
	sizes := map[int]int{}
	flows := map[Tuple]int{}
	repeats := 0
	var last []Tuple
	for _, p := range ps {
		sizes[len(p.Frame)]++
		flows[p.Tuple]++
		// With 4 active flows, a packet's tuple is usually among the
		// last few packets' tuples.
		for _, l := range last {
			if l == p.Tuple {
				repeats++
				break
			}
		}
		last = append(last, p.Tuple)
		if len(last) > 4 {
			last = last[1:]
		}
		if p.Aim < 0 {
			t.Fatal("miss=0 produced a miss")
		}
	}
	if len(sizes) != 2 || sizes[100] < 1500 || sizes[1000] < 1500 {
		t.Errorf("sizes %v, want 100 and 1000 about equally", sizes)
	}
	mean := float64(len(ps)) / float64(len(flows))
	if mean < 4 || mean > 20 {
		t.Errorf("mean packets per flow %.1f, want about 8", mean)
	}
	if float64(repeats)/float64(len(ps)) < 0.5 {
		t.Errorf("only %d of %d packets repeat a recent flow", repeats, len(ps))
	}
}

func TestParseTraffic(t *testing.T) {
	sp, err := ParseTraffic("packets=5,miss=0.5,flow=2,active=3,sizes=64,seed=7")
	if err != nil {
		t.Fatal(err)
	}
	if sp.Packets != 5 || sp.Miss != 0.5 || sp.Flow != 2 || sp.Active != 3 || !reflect.DeepEqual(sp.Sizes, []int{64}) || sp.Seed != 7 {
		t.Errorf("got %+v", sp)
	}
	for _, bad := range []string{"packets", "miss=2", "flow=0.5", "active=0", "sizes=a", "colour=red"} {
		if _, err := ParseTraffic(bad); err == nil || !strings.HasPrefix(err.Error(), "traffic spec") {
			t.Errorf("%q: got %v, want a traffic spec error", bad, err)
		}
	}
}
