package matchers

import (
	"net/netip"
	"testing"
)

// nfqueueCases were checked against iptables-save / iptables -L[ -n] 1.8.9.
// Where spec §6.6/§9 (written from iptables 1.8.11) differs, 1.8.9 is
// followed: an empty upper bound is 65535, not 65534, so "4:" is 4:65535
// and ":" is 0:65535, which the kernel refuses (65536 queues wrap to 0).
var nfqueueCases = []targetCase{
	{args: "", save: " --queue-num 0", listN: " NFQUEUE num 0"},
	{args: "--queue-num 5", save: " --queue-num 5", listN: " NFQUEUE num 5"},
	{args: "--queue-bypass", save: " --queue-num 0 --queue-bypass", listN: " NFQUEUE num 0 bypass"},
	{args: "--queue-bypass --queue-balance 0:6 --queue-cpu-fanout", save: " --queue-balance 0:6 --queue-bypass --queue-cpu-fanout", listN: " NFQUEUE balance 0:6 bypass cpu-fanout"},
	{args: "--queue-balance :4", save: " --queue-balance 0:4", listN: " NFQUEUE balance 0:4"},
	{args: "--queue-balance 4:", save: " --queue-balance 4:65535", listN: " NFQUEUE balance 4:65535"},
	{args: "--queue-num 65535 --queue-bypass", save: " --queue-num 65535 --queue-bypass", listN: " NFQUEUE num 65535 bypass"},
	{args: "--queue-balance 2:3 --queue-bypass", save: " --queue-balance 2:3 --queue-bypass", listN: " NFQUEUE balance 2:3 bypass"},
	{args: "--queue-num 0x10", save: " --queue-num 16", listN: " NFQUEUE num 16"},
	{args: `--queue-num " 7"`, save: " --queue-num 7", listN: " NFQUEUE num 7"},
	{args: "--queue-balance 1:65535", save: " --queue-balance 1:65535", listN: " NFQUEUE balance 1:65535"},
	{args: "--queue-balance 0x10:0x20", save: " --queue-balance 16:32", listN: " NFQUEUE balance 16:32"},
	{args: "--queue-balance 65534:", save: " --queue-balance 65534:65535", listN: " NFQUEUE balance 65534:65535"},
	{args: "--queue-balance :1", save: " --queue-balance 0:1", listN: " NFQUEUE balance 0:1"},
	{args: "--queue-cpu-fanout --queue-balance 1:3", save: " --queue-balance 1:3 --queue-cpu-fanout", listN: " NFQUEUE balance 1:3 cpu-fanout"},
	{args: `--queue-balance " 1: 3"`, save: " --queue-balance 1:3", listN: " NFQUEUE balance 1:3"},
	{rule: Rule{Table: "nat", Chain: "POSTROUTING"}, args: "", save: " --queue-num 0", listN: " NFQUEUE num 0"},
	// Refused.
	{args: "--queue-num 65536"},
	{args: "--queue-num -1"},
	{args: "--queue-balance :"},
	{args: "--queue-balance 0:65535"},
	{args: "--queue-balance 4"},
	{args: "--queue-balance 4:4"},
	{args: "--queue-balance 4:3"},
	{args: "--queue-balance 1:2:3"},
	{args: "--queue-balance a:b"},
	{args: "--queue-balance 65535:"},
	{args: "--queue-balance :0"},
	{args: `--queue-balance ""`},
	{args: "--queue-balance 1:2x"},
	{args: "--queue-num 1 --queue-balance 1:2"},
	{args: "--queue-balance 1:2 --queue-num 1"},
	{args: "--queue-cpu-fanout"},
	{args: "--queue-num 3 --queue-cpu-fanout"},
	{args: "--queue-bypass --queue-bypass"},
	{args: "--queue-num 1 --queue-num 2"},
	{args: "! --queue-num 1"},
}

func TestNFQUEUESaveList(t *testing.T) { runTargetCases(t, "NFQUEUE", nfqueueCases) }

// flowCtx is a Context for an IPv4 packet of proto from src to dst.
func flowCtx(src, dst string, proto uint8) *Context {
	return ctxFor(pkt{proto: proto, src: src, dst: dst}.view())
}

func TestNFQUEUEApply(t *testing.T) {
	build := func(args ...string) Target {
		tg, err := buildTarget("NFQUEUE", Rule{}, args...)
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	c := flowCtx("10.0.0.1", "10.0.0.2", 6)
	if v := build().Apply(c); v != QueueVerdict(0, false) || v.Base() != Queue {
		t.Errorf("default: %v", v)
	}
	if v := build("--queue-num", "513", "--queue-bypass").Apply(c); v != Verdict(513<<16|3|0x8000) {
		t.Errorf("--queue-num 513 --queue-bypass: %#x", uint32(v))
	}
	if v := build("--queue-balance", "7:9", "--queue-cpu-fanout").Apply(c); v != QueueVerdict(7, false) {
		t.Errorf("cpu-fanout on CPU 0: %v, want queue 7", v)
	}

	// --queue-balance: within A..B, the same for both directions, and
	// spread over the range across flows.
	bal := build("--queue-balance", "10:13", "--queue-bypass")
	seen := map[uint16]bool{}
	for i := 0; i < 256; i++ {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).String()
		fwd := bal.Apply(flowCtx(a, "198.51.100.1", 17))
		rev := bal.Apply(flowCtx("198.51.100.1", a, 17))
		if fwd != rev {
			t.Fatalf("%s: directions differ: %v vs %v", a, fwd, rev)
		}
		q := uint16(fwd >> 16)
		if fwd&QueueBypass == 0 || fwd.Base() != Queue || q < 10 || q > 13 {
			t.Fatalf("%s: verdict %#x out of range", a, uint32(fwd))
		}
		seen[q] = true
	}
	if len(seen) != 4 {
		t.Errorf("256 flows used queues %v, want all of 10..13", seen)
	}
	// The protocol is hashed, ports are not.
	diff := false
	for i := 0; i < 64 && !diff; i++ {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).String()
		diff = bal.Apply(flowCtx(a, "198.51.100.1", 6)) != bal.Apply(flowCtx(a, "198.51.100.1", 17))
	}
	if !diff {
		t.Error("protocol does not influence the queue")
	}
}
