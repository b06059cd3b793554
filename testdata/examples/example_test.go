// Package examples holds the example firewall of the README: rules.v4, the
// expectations it must meet (expect.txt) and the capture they are checked
// against (capture.pcap), which this test generates.
//
// The directory is named testdata, so `go test ./...` skips it; run
//
//	go test ./testdata/examples            # check capture.pcap and expect.txt
//	go test ./testdata/examples -update    # rewrite capture.pcap
package examples

import (
	"bytes"
	"context"
	"flag"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/qtables/qtables/engine"
	_ "github.com/qtables/qtables/matchers" // extension registry
	"github.com/qtables/qtables/packet"
)

var update = flag.Bool("update", false, "rewrite capture.pcap")

// pkt is one frame of the example capture.
type pkt struct {
	proto        string // tcp, udp, icmp, arp
	src, dst     string
	sport, dport uint16
	flags        string // TCP flags: S, SA, A, PA
	payload      string
}

// traffic is the example capture, frame by frame, with what rules.v4
// does to each packet at FORWARD.
var traffic = []pkt{
	{proto: "tcp", src: "203.0.113.5", dst: "192.0.2.10", sport: 50000, dport: 80, flags: "S"},  // 1 web: rule 1
	{proto: "tcp", src: "192.0.2.10", dst: "203.0.113.5", sport: 80, dport: 50000, flags: "SA"}, // 2 reply: rule 2
	{proto: "tcp", src: "203.0.113.5", dst: "192.0.2.10", sport: 50000, dport: 80, flags: "PA",
		payload: "GET / HTTP/1.1\r\nHost: example\r\n\r\n"}, // 3 web: rule 1
	{proto: "tcp", src: "198.51.100.7", dst: "192.0.2.10", sport: 40000, dport: 22, flags: "S"}, // 4 admin SSH: mark, rule 4
	{proto: "tcp", src: "203.0.113.5", dst: "192.0.2.10", sport: 40001, dport: 22, flags: "S"},  // 5 SSH: LOGDROP
	{proto: "tcp", src: "203.0.113.5", dst: "192.0.2.10", sport: 40002, dport: 113, flags: "S"}, // 6 ident: REJECT
	{proto: "icmp", src: "203.0.113.5", dst: "192.0.2.10", payload: "ping"},                     // 7 echo: rule 6
	{proto: "udp", src: "203.0.113.5", dst: "192.0.2.10", sport: 5353, dport: 53, payload: "q"}, // 8 DNS: LOGDROP
	{proto: "arp", src: "192.0.2.1", dst: "192.0.2.10"},                                         // 9 not IP
}

var start = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func frame(t *testing.T, p pkt) []byte {
	t.Helper()
	eth := &layers.Ethernet{
		SrcMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01},
		DstMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02},
		EthernetType: layers.EthernetTypeIPv4,
	}
	ls := []gopacket.SerializableLayer{eth}
	src, dst := net.ParseIP(p.src).To4(), net.ParseIP(p.dst).To4()
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: 0x1234, Flags: layers.IPv4DontFragment, SrcIP: src, DstIP: dst}
	switch p.proto {
	case "tcp":
		ip.Protocol = layers.IPProtocolTCP
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), Seq: 1, Window: 65535,
			SYN: strings.Contains(p.flags, "S"), ACK: strings.Contains(p.flags, "A"), PSH: strings.Contains(p.flags, "P")}
		if tcp.ACK {
			tcp.Ack = 1
		}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, ip, tcp)
	case "udp":
		ip.Protocol = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, ip, udp)
	case "icmp":
		ip.Protocol = layers.IPProtocolICMPv4
		ls = append(ls, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1})
	case "arp":
		eth.EthernetType = layers.EthernetTypeARP
		eth.DstMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		ls = append(ls, &layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
			SourceHwAddress: eth.SrcMAC, SourceProtAddress: src,
			DstHwAddress: make([]byte, 6), DstProtAddress: dst,
		})
	}
	if p.payload != "" {
		ls = append(ls, gopacket.Payload(p.payload))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// capture returns the example capture as pcap bytes: Ethernet, a frame
// every 100 ms from 2024-05-01 12:00 UTC.
func capture(t *testing.T) []byte {
	var b bytes.Buffer
	w, err := packet.NewCaptureWriter(&b, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range traffic {
		if err := w.WritePacket(start.Add(time.Duration(i)*100*time.Millisecond), frame(t, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestCapture keeps capture.pcap what this file generates.
func TestCapture(t *testing.T) {
	want := capture(t)
	if *update {
		if err := os.WriteFile("capture.pcap", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("capture.pcap")
	if err != nil {
		t.Fatalf("%v (run go test ./testdata/examples -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("capture.pcap differs from the generated capture (run go test ./testdata/examples -update)")
	}
}

// TestExpectations runs what the README shows,
//
//	qtables test --rules rules.v4 --chain FORWARD -i eth0 -o eth1 --expect expect.txt capture.pcap
//
// through the engine and requires every expectation to hold.
func TestExpectations(t *testing.T) {
	path := t.TempDir() + "/capture.pcap"
	if err := os.WriteFile(path, capture(t), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := engine.LoadFile("rules.v4")
	if err != nil {
		t.Fatal(err)
	}
	prog, err := engine.Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := engine.LoadExpectations("expect.txt")
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.Validate(rs, "filter"); err != nil {
		t.Fatal(err)
	}
	rep, err := engine.NewReport(rs, "filter")
	if err != nil {
		t.Fatal(err)
	}
	off := &engine.Offline{Chain: "FORWARD", In: "eth0", Out: "eth1"}
	verdicts := map[int]string{}
	if _, err := off.Run(context.Background(), prog, path, func(v *engine.Verdict) error {
		ex.Observe(v, rep)
		rec := rep.Record(v)
		verdicts[v.Frame] = rec.Verdict + rec.Skipped
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range ex.Results(rs) {
		if !r.Passed {
			t.Errorf("%s: %s\n\t%s", r.Expectation.Pos, r.Expectation.Text, strings.Join(r.Got, "\n\t"))
		}
	}
	// The traffic comments above, independently of expect.txt.
	want := []string{"ACCEPT", "ACCEPT", "ACCEPT", "ACCEPT", "DROP", "DROP", "ACCEPT", "DROP", "non-ip"}
	for i, w := range want {
		if verdicts[i+1] != w {
			t.Errorf("frame %d: %q, want %q", i+1, verdicts[i+1], w)
		}
	}
}
