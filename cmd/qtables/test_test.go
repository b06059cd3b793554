package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
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

// testPkt describes one crafted frame of a test capture.
type testPkt struct {
	proto        string // "tcp", "udp", "icmp" or "arp"
	src, dst     string
	sport, dport uint16
	ttl          uint8 // 64 when 0
	payload      int
}

// ipLen is the IPv4 total length of p: what the kernel's counters count.
func (p testPkt) ipLen() int {
	n := 20 + p.payload
	switch p.proto {
	case "tcp":
		n += 20
	case "udp", "icmp":
		n += 8
	}
	return n
}

// craftFrame encodes p as an Ethernet frame with gopacket, an encoder
// independent of the decoder under test.
func craftFrame(t testing.TB, p testPkt) []byte {
	t.Helper()
	eth := &layers.Ethernet{
		SrcMAC:       net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1},
		DstMAC:       net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4,
	}
	ls := []gopacket.SerializableLayer{eth}
	if p.proto == "arp" {
		eth.EthernetType = layers.EthernetTypeARP
		eth.DstMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		ls = append(ls, &layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
			SourceHwAddress: eth.SrcMAC, SourceProtAddress: net.ParseIP(p.src).To4(),
			DstHwAddress: make([]byte, 6), DstProtAddress: net.ParseIP(p.dst).To4(),
		})
	} else {
		ttl := p.ttl
		if ttl == 0 {
			ttl = 64
		}
		ip := &layers.IPv4{Version: 4, TTL: ttl, Id: 1, SrcIP: net.ParseIP(p.src).To4(), DstIP: net.ParseIP(p.dst).To4()}
		ls = append(ls, ip)
		switch p.proto {
		case "tcp":
			ip.Protocol = layers.IPProtocolTCP
			tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), SYN: true, Window: 64240, Seq: 1000}
			if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			ls = append(ls, tcp)
		case "udp":
			ip.Protocol = layers.IPProtocolUDP
			udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
			if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			ls = append(ls, udp)
		case "icmp":
			ip.Protocol = layers.IPProtocolICMPv4
			ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1})
		default:
			t.Fatalf("craftFrame: protocol %q", p.proto)
		}
		ls = append(ls, gopacket.Payload(bytes.Repeat([]byte{'x'}, p.payload)))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// testEpoch is the timestamp of frame 1; frame n is n-1 seconds and n
// microseconds later.
var testEpoch = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

func frameTime(n int) time.Time {
	return testEpoch.Add(time.Duration(n-1)*time.Second + time.Duration(n)*time.Microsecond)
}

// writeTestCapture writes pkts as an Ethernet pcap and returns its path
// and the frames written.
func writeTestCapture(t testing.TB, dir string, pkts []testPkt) (string, [][]byte) {
	t.Helper()
	path := filepath.Join(dir, "capture.pcap")
	w, err := packet.CreateCapture(path, 1)
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for i, p := range pkts {
		f := craftFrame(t, p)
		frames = append(frames, f)
		if err := w.WritePacket(frameTime(i+1), f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path, frames
}

// runQtables runs the command line as main does and returns stdout,
// stderr and the exit status.
func runQtables(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	code := 0
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else {
			errb.WriteString("qtables: " + err.Error() + "\n")
			code = 1
		}
	}
	return out.String(), errb.String(), code
}

const testRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:LOGDROP - [0:0]
-A FORWARD -p udp -m udp --dport 53 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 22 -j MARK --set-xmark 0x1/0xffffffff
-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset
-A FORWARD -p tcp -m tcp --dport 5000 -j NFQUEUE --queue-num 3
-A FORWARD -p icmp -j LOGDROP
-A LOGDROP -j LOG --log-prefix "dropped: " --log-level 6
COMMIT
`

// testTraffic is the capture the tests evaluate against testRules at
// FORWARD. The comments say what the kernel would do with each packet.
var testTraffic = []testPkt{
	{proto: "udp", src: "10.0.0.1", dst: "10.0.1.1", sport: 1000, dport: 53, payload: 12}, // 1: rule 1 ACCEPT
	{proto: "tcp", src: "10.0.0.1", dst: "10.0.1.2", sport: 40000, dport: 22},             // 2: rule 2 MARK, rule 3 ACCEPT
	{proto: "tcp", src: "10.0.1.2", dst: "10.0.0.1", sport: 22, dport: 40000},             // 3: reply, no rule: policy DROP
	{proto: "tcp", src: "10.0.0.1", dst: "10.0.1.2", sport: 40001, dport: 23},             // 4: rule 4 REJECT (DROP)
	{proto: "tcp", src: "10.0.0.1", dst: "10.0.1.2", sport: 40002, dport: 5000, payload: 3},
	// 5: rule 5 QUEUE 3
	{proto: "icmp", src: "10.0.0.1", dst: "10.0.1.2", payload: 4},                    // 6: rule 6 -> LOGDROP: LOG, return, policy DROP
	{proto: "arp", src: "10.0.0.1", dst: "10.0.0.254"},                               // 7: not IP: never reaches FORWARD
	{proto: "udp", src: "10.0.0.1", dst: "10.0.1.1", sport: 1001, dport: 53, ttl: 1}, // 8: TTL 1: not forwarded
	{proto: "udp", src: "10.0.0.3", dst: "10.0.1.1", sport: 1002, dport: 53},         // 9: rule 1 ACCEPT
}

func setupTest(t *testing.T) (dir, rules, capture string, frames [][]byte) {
	t.Helper()
	dir = t.TempDir()
	rules = filepath.Join(dir, "rules.v4")
	if err := os.WriteFile(rules, []byte(testRules), 0o644); err != nil {
		t.Fatal(err)
	}
	capture, frames = writeTestCapture(t, dir, testTraffic)
	return dir, rules, capture, frames
}

func decodeVerdicts(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("stdout is not JSON lines: %v\n%s", err, out)
		}
		recs = append(recs, m)
	}
	return recs
}

func TestTestVerdicts(t *testing.T) {
	_, rules, capture, _ := setupTest(t)
	out, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "-i", "eth0", "-o", "eth1", "--verdicts", "--quiet", capture)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
	if errOut != "" {
		t.Errorf("--quiet run wrote to stderr:\n%s", errOut)
	}
	if n := strings.Count(out, "\n"); n != len(testTraffic) {
		t.Errorf("%d lines, want one per packet (%d):\n%s", n, len(testTraffic), out)
	}
	recs := decodeVerdicts(t, out)
	if len(recs) != len(testTraffic) {
		t.Fatalf("%d records, want %d", len(recs), len(testTraffic))
	}
	// Numbers decode as float64 from JSON.
	want := []map[string]any{
		{"frame": 1.0, "src": "10.0.0.1", "dst": "10.0.1.1", "proto": "udp", "sport": 1000.0, "dport": 53.0,
			"verdict": "ACCEPT", "mark": "0x0", "ctmark": "0x0", "rule": "FORWARD:1",
			"rule_text": "-A FORWARD -p udp -m udp --dport 53 -j ACCEPT"},
		{"frame": 2.0, "proto": "tcp", "sport": 40000.0, "dport": 22.0, "verdict": "ACCEPT", "mark": "0x1", "rule": "FORWARD:3",
			"rule_text": "-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT"},
		{"frame": 3.0, "src": "10.0.1.2", "dst": "10.0.0.1", "verdict": "DROP", "mark": "0x0", "rule": "FORWARD:policy",
			"rule_text": "-P FORWARD DROP"},
		{"frame": 4.0, "verdict": "DROP", "rule": "FORWARD:4",
			"rule_text": "-A FORWARD -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset"},
		{"frame": 5.0, "verdict": "QUEUE 3", "queue": 3.0, "rule": "FORWARD:5"},
		{"frame": 6.0, "proto": "icmp", "icmp_type": 8.0, "icmp_code": 0.0, "verdict": "DROP", "rule": "FORWARD:policy"},
		{"frame": 7.0, "skipped": "non-ip"},
		{"frame": 8.0, "src": "10.0.0.1", "skipped": "ttl-expired"},
		{"frame": 9.0, "src": "10.0.0.3", "verdict": "ACCEPT", "rule": "FORWARD:1"},
	}
	for i, w := range want {
		got := recs[i]
		for k, v := range w {
			if got[k] != v {
				t.Errorf("frame %d: %s = %#v, want %#v", i+1, k, got[k], v)
			}
		}
		if ts, err := time.Parse(time.RFC3339Nano, got["time"].(string)); err != nil || !ts.Equal(frameTime(i+1)) {
			t.Errorf("frame %d: time %v (%v), want %v", i+1, got["time"], err, frameTime(i+1))
		}
	}
	// Absent fields: no ports for ICMP, no verdict for skipped packets,
	// no events where no target raised one.
	for _, c := range []struct {
		frame int
		key   string
	}{{6, "sport"}, {6, "dport"}, {7, "verdict"}, {7, "src"}, {8, "verdict"}, {8, "rule"}, {1, "events"}, {1, "queue"}, {1, "icmp_type"}} {
		if v, ok := recs[c.frame-1][c.key]; ok {
			t.Errorf("frame %d: unexpected %s = %#v", c.frame, c.key, v)
		}
	}
	// Events: REJECT on frame 4, LOG from LOGDROP:1 on frame 6.
	ev4, _ := recs[3]["events"].([]any)
	if len(ev4) != 1 {
		t.Fatalf("frame 4 events = %#v", recs[3]["events"])
	}
	if e := ev4[0].(map[string]any); e["type"] != "REJECT" || e["with"] != "tcp-reset" || e["rule"] != "FORWARD:4" {
		t.Errorf("frame 4 event %#v", e)
	}
	ev6, _ := recs[5]["events"].([]any)
	if len(ev6) != 1 {
		t.Fatalf("frame 6 events = %#v", recs[5]["events"])
	}
	e := ev6[0].(map[string]any)
	if e["type"] != "LOG" || e["level"] != 6.0 || e["rule"] != "LOGDROP:1" {
		t.Errorf("frame 6 event %#v", e)
	}
	// The kernel's LOG line: prefix, then IN= OUT= ... SRC= DST= ... PROTO=ICMP.
	text, _ := e["text"].(string)
	for _, part := range []string{"dropped: IN=eth0 OUT=eth1 ", " SRC=10.0.0.1 DST=10.0.1.2 ", " PROTO=ICMP TYPE=8 CODE=0 "} {
		if !strings.Contains(text, part) && !strings.HasPrefix(text, part) {
			t.Errorf("frame 6 LOG text %q lacks %q", text, part)
		}
	}
}

func TestTestTrace(t *testing.T) {
	_, rules, capture, _ := setupTest(t)
	out, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "-i", "eth0", "-o", "eth1", "--trace", "3", "--trace", "6,7", "-q", capture)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// Frame 3, TCP 22 -> 40000, is compared with every FORWARD rule and
	// falls through to the policy; frame 6 (ICMP) goes through LOGDROP
	// and back; frame 7 (ARP) is never evaluated.
	want := `TRACE: frame 3 2024-05-01T10:00:02.000003Z IN=eth0 OUT=eth1 SRC=10.0.1.2 DST=10.0.0.1 LEN=40 TTL=63 PROTO=TCP SPT=22 DPT=40000
TRACE: filter:FORWARD:rule:1 -A FORWARD -p udp -m udp --dport 53 -j ACCEPT -> no match (-p)
TRACE: filter:FORWARD:rule:2 -A FORWARD -p tcp -m tcp --dport 22 -j MARK --set-xmark 0x1/0xffffffff -> no match (-m tcp)
TRACE: filter:FORWARD:rule:3 -A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT -> no match (-m tcp)
TRACE: filter:FORWARD:rule:4 -A FORWARD -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset -> no match (-m tcp)
TRACE: filter:FORWARD:rule:5 -A FORWARD -p tcp -m tcp --dport 5000 -j NFQUEUE --queue-num 3 -> no match (-m tcp)
TRACE: filter:FORWARD:rule:6 -A FORWARD -p icmp -j LOGDROP -> no match (-p)
TRACE: filter:FORWARD:policy:7 -P FORWARD DROP
TRACE: frame 3 verdict DROP by filter:FORWARD:policy
TRACE: frame 6 2024-05-01T10:00:05.000006Z IN=eth0 OUT=eth1 SRC=10.0.0.1 DST=10.0.1.2 LEN=32 TTL=63 PROTO=ICMP TYPE=8 CODE=0
TRACE: filter:FORWARD:rule:1 -A FORWARD -p udp -m udp --dport 53 -j ACCEPT -> no match (-p)
TRACE: filter:FORWARD:rule:2 -A FORWARD -p tcp -m tcp --dport 22 -j MARK --set-xmark 0x1/0xffffffff -> no match (-p)
TRACE: filter:FORWARD:rule:3 -A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT -> no match (-p)
TRACE: filter:FORWARD:rule:4 -A FORWARD -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset -> no match (-p)
TRACE: filter:FORWARD:rule:5 -A FORWARD -p tcp -m tcp --dport 5000 -j NFQUEUE --queue-num 3 -> no match (-p)
TRACE: filter:FORWARD:rule:6 -A FORWARD -p icmp -j LOGDROP -> match
TRACE: filter:LOGDROP:rule:1 -A LOGDROP -j LOG --log-prefix "dropped: " --log-level 6 -> match
TRACE: filter:LOGDROP:return:2
TRACE: filter:FORWARD:policy:7 -P FORWARD DROP
TRACE: frame 6 verdict DROP by filter:FORWARD:policy LOG(LOGDROP:1)
TRACE: frame 7 2024-05-01T10:00:06.000007Z IN=eth0 OUT=eth1
TRACE: frame 7 skipped (non-ip)
`
	if out != want {
		t.Errorf("trace:\n%s\nwant:\n%s", out, want)
	}
}

func TestTestTraceInVerdicts(t *testing.T) {
	_, rules, capture, _ := setupTest(t)
	out, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--verdicts", "--trace", "all", "-q", capture)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	recs := decodeVerdicts(t, out)
	tr, _ := recs[1]["trace"].([]any)
	// Frame 2: header, rule 1 (no match), rule 2 (MARK, match), rule 3
	// (ACCEPT, match), verdict.
	if len(tr) != 5 {
		t.Fatalf("frame 2 trace %#v", recs[1]["trace"])
	}
	if s := tr[2].(string); !strings.HasPrefix(s, "TRACE: filter:FORWARD:rule:2 ") || !strings.HasSuffix(s, " -> match") {
		t.Errorf("frame 2 trace line %q", s)
	}
	if s := tr[4].(string); s != "TRACE: frame 2 verdict ACCEPT by filter:FORWARD:3 mark 0x1" {
		t.Errorf("frame 2 verdict line %q", s)
	}
}

func TestTestSplit(t *testing.T) {
	dir, rules, capture, frames := setupTest(t)
	acc, drp := filepath.Join(dir, "acc.pcap"), filepath.Join(dir, "drop.pcap")
	_, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--write-accepted", acc, "--write-dropped", drp, capture)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// Accepted: 1, 2, 9. Dropped: 3, 4 (REJECT), 6. Queued 5 and skipped
	// 7, 8 in neither. Frames are as captured (frame 9's TTL still 64,
	// although FORWARD saw 63).
	check := func(path string, want []int) {
		t.Helper()
		r, err := packet.OpenCapture(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var v packet.View
		for i := 0; ; i++ {
			_, err := r.Next(&v)
			if err == io.EOF {
				if i != len(want) {
					t.Errorf("%s: %d frames, want %d", path, i, len(want))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.LinkType() != 1 {
				t.Errorf("%s: link type %d", path, r.LinkType())
			}
			if i >= len(want) {
				continue
			}
			n := want[i]
			if !bytes.Equal(r.Data(), frames[n-1]) {
				t.Errorf("%s: frame %d differs from captured frame %d", path, i+1, n)
			}
			if !v.Timestamp.Equal(frameTime(n)) {
				t.Errorf("%s: frame %d time %v, want %v", path, i+1, v.Timestamp, frameTime(n))
			}
		}
	}
	check(acc, []int{1, 2, 9})
	check(drp, []int{3, 4, 6})

	// A file that gets no packet is still a valid, empty capture.
	empty := filepath.Join(dir, "none.pcap")
	noDrop := filepath.Join(dir, "rules-accept.v4")
	os.WriteFile(noDrop, []byte("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"), 0o644)
	if _, errOut, code := runQtables(t, "test", "--rules", noDrop, "--chain", "FORWARD", "--write-dropped", empty, "-q", capture); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	check(empty, nil)

	// Refuses to overwrite its input.
	if _, _, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--write-dropped", capture, capture); code != 2 {
		t.Errorf("--write-dropped CAPTURE: exit %d, want 2", code)
	}
}

const testExpectPass = `# all of these hold for testTraffic at FORWARD
frame 1 ACCEPT rule FORWARD:1
frame 2 ACCEPT mark 0x1 rule FORWARD:3
frame 3 DROP rule FORWARD:policy   # the reply is not allowed
frame 4 REJECT tcp-reset
frame 4 DROP
frame 5 QUEUE 3
frame 6 DROP mark 0
frame 7 SKIPPED non-ip
frame 8 SKIPPED
frame 1,9 ACCEPT
flow udp 10.0.0.0/24 -> 10.0.1.1:53 ACCEPT
flow tcp 10.0.0.1:40000 -> 10.0.1.2:22 ACCEPT mark 0x1/0x1
flow icmp 10.0.0.1 <-> 10.0.1.2 DROP
rule filter FORWARD 1 packets 2 bytes 68
rule filter FORWARD 2 packets 1
rule filter LOGDROP 1 packets 1 bytes 32
policy filter FORWARD packets 2 bytes 72
rule filter FORWARD 6 packets 1
`

func TestTestExpectPass(t *testing.T) {
	dir, rules, capture, _ := setupTest(t)
	exp := filepath.Join(dir, "expect")
	os.WriteFile(exp, []byte(testExpectPass), 0o644)
	junit := filepath.Join(dir, "junit.xml")
	out, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--expect", exp, "--junit", junit, capture)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, errOut)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	for _, want := range []string{
		"qtables test: 9 packets read, 7 evaluated, 2 skipped (non-ip 1, ttl-expired 1)\n",
		"qtables test: verdicts: 3 ACCEPT, 3 DROP, 1 QUEUE 3\n",
		"qtables test: expectations: 18 passed, 0 failed\n",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	s := parseJUnit(t, junit)
	if s.Tests != 18 || s.Failures != 0 || len(s.Suites) != 1 || len(s.Suites[0].Cases) != 18 {
		t.Errorf("junit: %d tests, %d failures, %+v", s.Tests, s.Failures, s.Suites)
	}
}

type junitDoc struct {
	XMLName  xml.Name `xml:"testsuites"`
	Tests    int      `xml:"tests,attr"`
	Failures int      `xml:"failures,attr"`
	Suites   []struct {
		Name     string `xml:"name,attr"`
		Tests    int    `xml:"tests,attr"`
		Failures int    `xml:"failures,attr"`
		Cases    []struct {
			Name    string `xml:"name,attr"`
			Failure *struct {
				Message string `xml:"message,attr"`
				Text    string `xml:",chardata"`
			} `xml:"failure"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func parseJUnit(t *testing.T, path string) junitDoc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Well-formed: the whole document tokenizes.
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("junit XML not well-formed: %v\n%s", err, b)
		}
	}
	var doc junitDoc
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestTestExpectFail(t *testing.T) {
	dir, rules, capture, _ := setupTest(t)
	exp := filepath.Join(dir, "expect")
	os.WriteFile(exp, []byte(`frame 1 ACCEPT
frame 3 ACCEPT
flow tcp 10.0.0.1 -> 10.0.1.2 ACCEPT
frame 20 DROP
flow tcp 10.9.9.9:1 -> 10.0.1.2:22 ACCEPT
rule filter FORWARD 1 packets 5
frame 2 ACCEPT mark 0x2
frame 6 REJECT
policy filter FORWARD packets 2
`), 0o644)
	junit := filepath.Join(dir, "junit.xml")
	_, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--expect", exp, "--junit", junit, capture)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, errOut)
	}
	// Every failing expectation is reported, with what happened.
	for _, want := range []string{
		"FAIL " + exp + ":2:1: frame 3 ACCEPT\n    frame 3: DROP by FORWARD:policy (-P FORWARD DROP)\n",
		// frames 4 and 5 are the TCP packets from 10.0.0.1 not accepted.
		"FAIL " + exp + ":3:1: flow tcp 10.0.0.1 -> 10.0.1.2 ACCEPT\n    2 of 3 packets of the flow differ\n    frame 4: DROP (REJECT tcp-reset) by FORWARD:4",
		"    frame 5: QUEUE 3 by FORWARD:5 (-A FORWARD -p tcp -m tcp --dport 5000 -j NFQUEUE --queue-num 3)\n",
		"FAIL " + exp + ":4:1: frame 20 DROP\n    frame 20 not in the capture (9 frames read)\n",
		"FAIL " + exp + ":5:1: flow tcp 10.9.9.9:1 -> 10.0.1.2:22 ACCEPT\n    no evaluated packet belongs to the flow\n",
		"FAIL " + exp + ":6:1: rule filter FORWARD 1 packets 5\n    packets 2 bytes 68\n",
		"FAIL " + exp + ":7:1: frame 2 ACCEPT mark 0x2\n    frame 2: ACCEPT by FORWARD:3 (-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT), mark 0x1\n",
		"FAIL " + exp + ":8:1: frame 6 REJECT\n    frame 6: DROP by FORWARD:policy",
		"qtables test: expectations: 2 passed, 7 failed\n",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "FAIL "+exp+":1:") || strings.Contains(errOut, "FAIL "+exp+":9:") {
		t.Errorf("passing expectations reported as failures:\n%s", errOut)
	}
	doc := parseJUnit(t, junit)
	if doc.Tests != 9 || doc.Failures != 7 || doc.Suites[0].Failures != 7 {
		t.Errorf("junit: tests %d failures %d", doc.Tests, doc.Failures)
	}
	failed := 0
	for _, c := range doc.Suites[0].Cases {
		if c.Failure != nil {
			failed++
			if c.Failure.Message == "" || !strings.Contains(c.Failure.Text, "expect:") {
				t.Errorf("testcase %q: failure without detail: %+v", c.Name, c.Failure)
			}
		}
	}
	if failed != 7 || doc.Suites[0].Cases[1].Name != "line 2: frame 3 ACCEPT" {
		t.Errorf("junit testcases: %d failures; case 2 %q", failed, doc.Suites[0].Cases[1].Name)
	}
}

func TestTestExpectFileErrors(t *testing.T) {
	dir, rules, capture, _ := setupTest(t)
	exp := filepath.Join(dir, "expect")
	os.WriteFile(exp, []byte("frame 1 ACCEPT\nframe x DROP\n  flow tcp 10.0.0.1 => 10.0.0.2 DROP\nrule filter FORWARD 99 packets 1\n"), 0o644)
	out, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--expect", exp, capture)
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, errOut)
	}
	if out != "" {
		t.Errorf("stdout %q", out)
	}
	// Syntax errors are all reported with FILE:LINE:COL.
	for _, want := range []string{exp + ":2:7: ", exp + ":3:21: "} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	// A reference to a rule that does not exist is an error too, once
	// the syntax is right.
	os.WriteFile(exp, []byte("rule filter FORWARD 99 packets 1\n"), 0o644)
	_, errOut, code = runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--expect", exp, capture)
	if code != 2 || !strings.Contains(errOut, exp+":1:21: ") || !strings.Contains(errOut, "has 6 rules") {
		t.Errorf("exit %d, stderr:\n%s", code, errOut)
	}
	// --junit without --expect, bad --trace.
	if _, _, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--junit", filepath.Join(dir, "j.xml"), capture); code != 2 {
		t.Errorf("--junit alone: exit %d", code)
	}
	if _, _, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--trace", "0", capture); code != 2 {
		t.Errorf("--trace 0: exit %d", code)
	}
	for _, args := range [][]string{
		{"--rules", rules, "--chain", "FORWARD", "--no-such-flag", capture},
		{"--rules", rules, capture},
		{"--chain", "FORWARD", capture},
		{"--rules", rules, "--chain", "FORWARD"},
		{"--rules", rules, "--chain", "FORWARD", capture, capture},
		{"--rules", rules, "--chain", "LOGDROP", capture},
		{"--rules", rules, "--chain", "PREROUTING", capture},
		{"--rules", rules, "--chain", "FORWARD", "-t", "mangle", capture},
	} {
		if _, errOut, code := runQtables(t, append([]string{"test"}, args...)...); code != 2 || !strings.HasPrefix(errOut, "qtables test: ") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a message", args, code, errOut)
		}
	}
	// A capture that cannot be read is not a usage error.
	if _, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", filepath.Join(dir, "missing.pcap")); code != 1 || !strings.Contains(errOut, "missing.pcap") {
		t.Errorf("missing capture: exit %d, stderr %q", code, errOut)
	}
}

// TestTestCounters keeps the contract the kernel conformance suite relies
// on: --counters prints exactly iptables-save -c's form.
func TestTestCounters(t *testing.T) {
	_, rules, capture, _ := setupTest(t)
	out, errOut, code := runQtables(t, "test", "--rules", rules, "--chain", "FORWARD", "--counters", "-q", capture)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "# Generated by ") || lines[1] != "*filter" {
		t.Fatalf("header:\n%s", out)
	}
	// Chain counters: built-in chains show their policy counters (2
	// packets, 40+32 bytes for FORWARD), user chains [0:0]; rules are
	// prefixed by [packets:bytes].
	want := `:INPUT ACCEPT [0:0]
:FORWARD DROP [2:72]
:OUTPUT ACCEPT [0:0]
:LOGDROP - [0:0]
[2:68] -A FORWARD -p udp -m udp --dport 53 -j ACCEPT
[1:40] -A FORWARD -p tcp -m tcp --dport 22 -j MARK --set-xmark 0x1/0xffffffff
[1:40] -A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT
[1:40] -A FORWARD -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset
[1:43] -A FORWARD -p tcp -m tcp --dport 5000 -j NFQUEUE --queue-num 3
[1:32] -A FORWARD -p icmp -j LOGDROP
[1:32] -A LOGDROP -j LOG --log-prefix "dropped: " --log-level 6
COMMIT
`
	if got := strings.Join(lines[2:len(lines)-2], "\n") + "\n"; got != want {
		t.Errorf("counters:\n%s\nwant:\n%s", got, want)
	}
	if !strings.HasPrefix(lines[len(lines)-2], "# Completed on ") {
		t.Errorf("trailer %q", lines[len(lines)-2])
	}
}
