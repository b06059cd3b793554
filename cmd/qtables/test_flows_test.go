package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/qtables/qtables/packet"
)

// flowSeg is one TCP segment of a stateful test capture.
type flowSeg struct {
	src, dst     string
	sport, dport uint16
	flags        string // S A F R P
	seq, ack     uint32
	ttl          uint8
}

func flowFrame(t testing.TB, s flowSeg) []byte {
	t.Helper()
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	ip := &layers.IPv4{Version: 4, TTL: ttl, Protocol: layers.IPProtocolTCP,
		SrcIP: net.ParseIP(s.src).To4(), DstIP: net.ParseIP(s.dst).To4()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport),
		Seq: s.seq, Ack: s.ack, Window: 64240,
		SYN: strings.Contains(s.flags, "S"), ACK: strings.Contains(s.flags, "A"),
		FIN: strings.Contains(s.flags, "F"), RST: strings.Contains(s.flags, "R")}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestTestStateful runs a stateful rule set over both directions of a
// connection through a router, one millisecond apart, with the
// interfaces given per address, and checks the counters the kernel would
// show and the connection table conntrack -L would list.
func TestTestStateful(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	if err := os.WriteFile(rules, []byte(`*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lan -o wan -p tcp -m tcp --dport 80 -m state --state NEW -j CONNMARK --set-xmark 0x7/0xffffffff
-A FORWARD -i lan -o wan -p tcp -m tcp --dport 80 -m state --state NEW -j ACCEPT
-A FORWARD -m conntrack --ctstate INVALID
COMMIT
`), 0o644); err != nil {
		t.Fatal(err)
	}
	const c, s = "10.0.0.1", "192.0.2.10"
	segs := []flowSeg{
		{c, s, 40000, 80, "S", 1000, 0, 0},     // NEW: rules 2, 3
		{s, c, 80, 40000, "SA", 5000, 1001, 0}, // ESTABLISHED (arrives on wan): rule 1
		{c, s, 40000, 80, "A", 1001, 5001, 0},  // rule 1
		{c, s, 40001, 22, "S", 1000, 0, 0},     // NEW, not allowed: policy DROP
		{c, s, 40001, 22, "S", 1000, 0, 0},     // NEW again (the first was dropped): policy
		{s, c, 22, 40001, "SA", 7000, 1001, 0}, // INVALID (no connection): rule 4, policy
		{c, s, 40002, 80, "S", 1000, 0, 1},     // TTL 1: tracked, never forwarded
		{c, s, 40002, 80, "S", 1000, 0, 0},     // NEW (the TTL-1 one was discarded): rules 2, 3
	}
	capture := filepath.Join(dir, "c.pcap")
	w, err := packet.CreateCapture(capture, 1)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	for i, sg := range segs {
		if err := w.WritePacket(base.Add(time.Duration(i)*time.Millisecond), flowFrame(t, sg)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD",
		"-i", "lan", "-o", "wan", "--in-interface-map", "192.0.2.0/24=wan", "--out-interface-map", "10.0.0.0/8=lan",
		"--counters", "--flows", capture)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantCounters := `:FORWARD DROP [3:120]
:OUTPUT ACCEPT [0:0]
[2:80] -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[2:80] -A FORWARD -i lan -o wan -p tcp -m tcp --dport 80 -m state --state NEW -j CONNMARK --set-xmark 0x7/0xffffffff
[2:80] -A FORWARD -i lan -o wan -p tcp -m tcp --dport 80 -m state --state NEW -j ACCEPT
[1:40] -A FORWARD -m conntrack --ctstate INVALID
`
	if !strings.Contains(out, wantCounters) {
		t.Errorf("counters:\n%s\nwant:\n%s", out, wantCounters)
	}
	// The last packet is 7 ms after the first; the first connection was
	// last refreshed at 2 ms (ESTABLISHED, 5 days), the second is in
	// SYN_SENT since 7 ms (120 s).
	wantFlows := "tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=192.0.2.10 sport=40000 dport=80 packets=2 bytes=80 src=192.0.2.10 dst=10.0.0.1 sport=80 dport=40000 packets=1 bytes=40 [ASSURED] mark=7 use=1\n" +
		"tcp      6 120 SYN_SENT src=10.0.0.1 dst=192.0.2.10 sport=40002 dport=80 packets=1 bytes=40 [UNREPLIED] src=192.0.2.10 dst=10.0.0.1 sport=80 dport=40002 packets=0 bytes=0 mark=7 use=1\n"
	if !strings.HasSuffix(out, wantFlows) {
		t.Errorf("flows:\n%s\nwant at the end:\n%s", out, wantFlows)
	}
	if !strings.Contains(errOut, "2 flow entries have been shown") {
		t.Errorf("summary: %s", errOut)
	}
}

func TestTestConntrackOptionErrors(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.WriteFile(rules, []byte("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"), 0o644)
	capture, _ := writeTestCapture(t, dir, testTraffic[:1])
	for _, args := range [][]string{
		{"--in-interface-map", "10.0.0.0/8"},
		{"--in-interface-map", "fe80::/64=eth0"},
		{"--out-interface-map", "10.0.0.0/33=eth0"},
		{"--ct-timeout", "tcp_timeout_bogus=5"},
		{"--ct-timeout", "udp_timeout=0"},
		{"--ct-max", "-2"},
	} {
		_, errOut, code := runQtables(t, append([]string{"test", "--rules", rules, "--chain", "FORWARD"}, append(args, capture)...)...)
		if code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errOut)
		}
	}
	// Accepted forms.
	_, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "-q",
		"--in-interface-map", "10.0.0.1=eth0", "--ct-timeout", "nf_conntrack_udp_timeout=10", "--ct-max", "-1", capture)
	if code != 0 {
		t.Errorf("exit %d: %s", code, errOut)
	}
	// INPUT has no output interface.
	_, _, code = runQtables(t, "test", "--rules", rules, "--chain", "INPUT", "--out-interface-map", "10.0.0.0/8=eth0", capture)
	if code != 1 {
		t.Errorf("--out-interface-map at INPUT: exit %d, want 1", code)
	}
}
