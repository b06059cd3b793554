package queue

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
)

// testRules: a mangle MARK whose mark the filter table reads (the kernel
// runs mangle before filter at a hook), LOG and DROP, REJECT, an interface
// match, and a FORWARD policy of DROP.
const testRules = `*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x50/0xffffffff
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 80 -m mark --mark 0x50 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 81 -j LOG --log-prefix "drop81: "
-A FORWARD -p tcp -m tcp --dport 81 -j DROP
-A FORWARD -p icmp -j ACCEPT
-A FORWARD -p udp -j REJECT --reject-with icmp-port-unreachable
-A FORWARD -i eth9 -j ACCEPT
COMMIT
`

func mustRules(t testing.TB, text string) *Rules {
	t.Helper()
	rs, err := engine.Parse("test.rules", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	r, err := CompileRules(rs, "test.rules")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ipv4 builds a datagram: a 20-byte header (TTL 63, DF) and l4.
func ipv4(proto uint8, src, dst string, l4 []byte) []byte {
	b := make([]byte, 20+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], 1)
	binary.BigEndian.PutUint16(b[6:], 0x4000)
	b[8], b[9] = 63, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	copy(b[20:], l4)
	return b
}

func tcpSyn(src, dst string, sport, dport uint16) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], 1000)
	h[12] = 5 << 4
	h[13] = 0x02
	binary.BigEndian.PutUint16(h[14:], 64240)
	return ipv4(6, src, dst, h)
}

func udp(src, dst string, sport, dport uint16) []byte {
	h := make([]byte, 12)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], 12)
	return ipv4(17, src, dst, h)
}

func icmpEcho(src, dst string) []byte {
	return ipv4(1, src, dst, []byte{8, 0, 0, 0, 0, 1, 0, 1})
}

var (
	inMAC  = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	srcMAC = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

func fwdMeta() Meta {
	return Meta{Hook: matchers.HookForward, In: "eth0", Out: "eth1", HasMAC: true, InMAC: inMAC, SrcMAC: srcMAC,
		HwProto: 0x0800, Now: time.Unix(1700000000, 0)}
}

func TestJudge(t *testing.T) {
	r := mustRules(t, testRules)
	type want struct {
		verdict matchers.Verdict
		mark    uint32
		changed bool
		chain   string
		rule    int
		events  []matchers.EventKind
		undec   bool
	}
	tests := []struct {
		name string
		data []byte
		meta func(*Meta)
		want want
	}{
		{"tcp 80: mangle marks, filter accepts on the mark", tcpSyn("10.0.1.2", "10.0.2.2", 40000, 80), nil,
			want{matchers.Accept, 0x50, true, "FORWARD", 1, nil, false}},
		{"tcp 81: logged and dropped", tcpSyn("10.0.1.2", "10.0.2.2", 40000, 81), nil,
			want{matchers.Drop, 0, false, "FORWARD", 3, []matchers.EventKind{matchers.EventLog}, false}},
		{"icmp accepted", icmpEcho("10.0.1.2", "10.0.2.2"), nil,
			want{matchers.Accept, 0, false, "FORWARD", 4, nil, false}},
		{"udp rejected: dropped with a reject event", udp("10.0.1.2", "10.0.2.2", 5000, 53), nil,
			want{matchers.Drop, 0, false, "FORWARD", 5, []matchers.EventKind{matchers.EventReject}, false}},
		{"tcp 82: FORWARD policy", tcpSyn("10.0.1.2", "10.0.2.2", 40000, 82), nil,
			want{matchers.Drop, 0, false, "FORWARD", 0, nil, false}},
		{"tcp 82 from eth9 accepted", tcpSyn("10.0.1.2", "10.0.2.2", 40000, 82), func(m *Meta) { m.In = "eth9" },
			want{matchers.Accept, 0, false, "FORWARD", 6, nil, false}},
		{"incoming mark kept", tcpSyn("10.0.1.2", "10.0.2.2", 40000, 82), func(m *Meta) { m.In, m.Mark = "eth9", 7 },
			want{matchers.Accept, 7, false, "FORWARD", 6, nil, false}},
		{"INPUT has policy ACCEPT", tcpSyn("10.0.1.2", "10.0.2.2", 40000, 81), func(m *Meta) { m.Hook, m.Out = matchers.HookInput, "" },
			want{matchers.Accept, 0, false, "INPUT", 0, nil, false}},
		{"not IPv4: default verdict", []byte{0x60, 0, 0, 0}, nil,
			want{matchers.Drop, 0, false, "", 0, nil, true}},
		{"empty: default verdict", nil, nil,
			want{matchers.Drop, 0, false, "", 0, nil, true}},
	}
	j := NewJudge(matchers.Drop)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fwdMeta()
			if tt.meta != nil {
				tt.meta(&m)
			}
			out := j.Judge(r, tt.data, &m)
			if out.Verdict != tt.want.verdict || out.Mark != tt.want.mark || out.MarkChanged != tt.want.changed ||
				out.Undecodable != tt.want.undec {
				t.Errorf("outcome %+v, want %+v", out, tt.want)
			}
			if !tt.want.undec && (out.Decided.Chain != tt.want.chain || out.Decided.Rule != tt.want.rule) {
				t.Errorf("decided by %s:%d, want %s:%d", out.Decided.Chain, out.Decided.Rule, tt.want.chain, tt.want.rule)
			}
			var kinds []matchers.EventKind
			for _, e := range j.Events() {
				kinds = append(kinds, e.Kind)
			}
			if len(kinds) != len(tt.want.events) || (len(kinds) > 0 && kinds[0] != tt.want.events[0]) {
				t.Errorf("events %v, want %v", kinds, tt.want.events)
			}
		})
	}
}

// The LOG line of a forwarded packet carries the kernel's MAC= field: the
// receiving device's address (the frame's destination), the sender's, and
// the ethertype.
func TestJudgeLogLine(t *testing.T) {
	r := mustRules(t, testRules)
	j := NewJudge(matchers.Accept)
	m := fwdMeta()
	j.Judge(r, tcpSyn("10.0.1.2", "10.0.2.2", 40000, 81), &m)
	ev := j.Events()
	if len(ev) != 1 || ev[0].Kind != matchers.EventLog {
		t.Fatalf("events %+v", ev)
	}
	line := string(ev[0].Text)
	const head = "drop81: IN=eth0 OUT=eth1 MAC=02:00:00:00:00:01:02:00:00:00:00:02:08:00 SRC=10.0.1.2 DST=10.0.2.2 LEN=40 "
	if !strings.HasPrefix(line, head) || !strings.Contains(line, " PROTO=TCP SPT=40000 DPT=81 ") {
		t.Errorf("log line %q, want it to start %q", line, head)
	}

	// Multicast destination: the MAC derived from the group address.
	dst := fakeLinkDst(t, "224.1.2.3")
	if dst != "01:00:5e:01:02:03" {
		t.Errorf("multicast link destination %s", dst)
	}
	if dst := fakeLinkDst(t, "255.255.255.255"); dst != "ff:ff:ff:ff:ff:ff" {
		t.Errorf("broadcast link destination %s", dst)
	}
	// Loopback: the kernel's all-zero header.
	m = fwdMeta()
	m.HasMAC, m.InLoopback, m.In = false, true, "lo"
	j.Judge(r, tcpSyn("10.0.1.2", "10.0.2.2", 40000, 81), &m)
	if line := string(j.Events()[0].Text); !strings.Contains(line, "IN=lo OUT=eth1 MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00 SRC=") {
		t.Errorf("loopback log line %q", line)
	}
	// No hardware address from the kernel: an empty MAC= as for raw IP.
	m = fwdMeta()
	m.HasMAC = false
	j.Judge(r, tcpSyn("10.0.1.2", "10.0.2.2", 40000, 81), &m)
	if line := string(j.Events()[0].Text); !strings.Contains(line, "OUT=eth1 MAC= SRC=") {
		t.Errorf("no-MAC log line %q", line)
	}
}

func fakeLinkDst(t *testing.T, dst string) string {
	t.Helper()
	r := mustRules(t, testRules)
	j := NewJudge(matchers.Accept)
	m := fwdMeta()
	j.Judge(r, tcpSyn("10.0.1.2", dst, 40000, 81), &m)
	link := j.view.Link
	if len(link) != 14 {
		t.Fatalf("link %x", link)
	}
	var b strings.Builder
	for i, c := range link[:6] {
		if i > 0 {
			b.WriteByte(':')
		}
		const hex = "0123456789abcdef"
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// Judging, including the LOG line, allocates nothing in steady state.
func TestJudgeAllocs(t *testing.T) {
	r := mustRules(t, testRules)
	j := NewJudge(matchers.Accept)
	pkts := [][]byte{
		tcpSyn("10.0.1.2", "10.0.2.2", 40000, 80), tcpSyn("10.0.1.2", "10.0.2.2", 40000, 81),
		udp("10.0.1.2", "10.0.2.2", 5000, 53), icmpEcho("10.0.1.2", "10.0.2.2"),
	}
	m := fwdMeta()
	for _, p := range pkts {
		j.Judge(r, p, &m)
	}
	allocs := testing.AllocsPerRun(200, func() {
		for _, p := range pkts {
			m := fwdMeta()
			j.Judge(r, p, &m)
		}
	})
	if allocs != 0 {
		t.Errorf("Judge allocates %.1f times per 4 packets, want 0", allocs)
	}
}

func BenchmarkJudge(b *testing.B) {
	r := mustRules(b, testRules)
	j := NewJudge(matchers.Accept)
	p := tcpSyn("10.0.1.2", "10.0.2.2", 40000, 80)
	m := fwdMeta()
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		j.Judge(r, p, &m)
	}
}

func BenchmarkFlowHash(b *testing.B) {
	p := tcpSyn("10.0.1.2", "10.0.2.2", 40000, 80)
	b.ReportAllocs()
	var h uint64
	for b.Loop() {
		h += FlowHash(p)
	}
	_ = h
}

func TestFlowHash(t *testing.T) {
	a := tcpSyn("10.0.1.2", "10.0.2.2", 40000, 80)
	back := tcpSyn("10.0.2.2", "10.0.1.2", 80, 40000)
	if FlowHash(a) != FlowHash(back) {
		t.Error("the two directions of a flow hash differently")
	}
	if FlowHash(a) == FlowHash(tcpSyn("10.0.1.2", "10.0.2.2", 40001, 80)) {
		t.Error("the source port does not count")
	}
	if FlowHash(a) == FlowHash(udp("10.0.1.2", "10.0.2.2", 40000, 80)) {
		t.Error("the protocol does not count")
	}
	// Same address pair, ports swapped between the ends: a different flow.
	if FlowHash(tcpSyn("10.0.0.1", "10.0.0.1", 1, 2)) != FlowHash(tcpSyn("10.0.0.1", "10.0.0.1", 2, 1)) {
		t.Error("a flow between one address and itself is not symmetric")
	}
	// A fragment hashes without ports, so all fragments of a datagram go
	// to one worker.
	frag := tcpSyn("10.0.1.2", "10.0.2.2", 40000, 80)
	binary.BigEndian.PutUint16(frag[6:], 0x2000) // MF
	later := tcpSyn("10.0.1.2", "10.0.2.2", 1, 2)
	binary.BigEndian.PutUint16(later[6:], 0x0003) // offset 24
	if FlowHash(frag) != FlowHash(later) {
		t.Error("fragments of one datagram hash differently")
	}
	if FlowHash(nil) != 0 || FlowHash([]byte{0x60, 0, 0, 0}) != 0 {
		t.Error("non-IPv4 must hash to 0")
	}
	// The low bits (the worker index) spread flows over workers.
	var buckets [4]int
	for port := uint16(1000); port < 1400; port++ {
		buckets[FlowHash(tcpSyn("10.0.1.2", "10.0.2.2", port, 80))%4]++
	}
	for i, n := range buckets {
		if n < 60 {
			t.Errorf("worker %d got %d of 400 flows", i, n)
		}
	}
}
