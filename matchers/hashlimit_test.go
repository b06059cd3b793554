package matchers

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qtables/qtables/packet"
)

// The save and list forms are what iptables 1.8.9 (nf_tables) prints; the
// "iptables" subtests check each against the installed one.
func TestHashlimitFormats(t *testing.T) {
	runFmtVectors(t, "hashlimit", []fmtVector{
		{opts: "--hashlimit-upto 1/sec --hashlimit-name a",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name a", listN: " limit: up to 1/sec burst 5"},
		{opts: "--hashlimit-above 5/min --hashlimit-mode srcip,dstport --hashlimit-name b --hashlimit-burst 10",
			save:  " --hashlimit-above 5/min --hashlimit-burst 10 --hashlimit-mode srcip,dstport --hashlimit-name b",
			listN: " limit: above 5/min burst 10 mode srcip-dstport"},
		{opts: "! --hashlimit-upto 5/min --hashlimit-mode dstip --hashlimit-name c",
			save: " --hashlimit-above 5/min --hashlimit-burst 5 --hashlimit-mode dstip --hashlimit-name c", listN: " limit: above 5/min burst 5 mode dstip"},
		{opts: "! --hashlimit-above 5/min --hashlimit-name c",
			save: " --hashlimit-upto 5/min --hashlimit-burst 5 --hashlimit-name c", listN: " limit: up to 5/min burst 5"},
		{opts: "--hashlimit 60/min --hashlimit-name d --hashlimit-mode srcport,srcip,dstip,dstport --hashlimit-srcmask 24 --hashlimit-dstmask 16",
			save:  " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-mode srcip,srcport,dstip,dstport --hashlimit-name d --hashlimit-htable-expire 60000 --hashlimit-srcmask 24 --hashlimit-dstmask 16",
			listN: " limit: up to 1/sec burst 5 mode srcip-srcport-dstip-dstport htable-expire 60000 srcmask 24 dstmask 16"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name e --hashlimit-htable-size 100 --hashlimit-htable-max 50 --hashlimit-htable-expire 1000 --hashlimit-htable-gcinterval 500",
			save:  " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name e --hashlimit-htable-size 100 --hashlimit-htable-max 50 --hashlimit-htable-gcinterval 500",
			listN: " limit: up to 1/sec burst 5 htable-size 100 htable-max 50 htable-gcinterval 500"},
		{opts: "--hashlimit-upto 1kb/s --hashlimit-name f", save: " --hashlimit-upto 1kb/s --hashlimit-name f", listN: " limit: up to 1kb/s"},
		{opts: "--hashlimit-upto 1mb/s --hashlimit-burst 2mb --hashlimit-name f2",
			save: " --hashlimit-upto 1mb/s --hashlimit-burst 2mb --hashlimit-name f2", listN: " limit: up to 1mb/s burst 2mb"},
		{opts: "--hashlimit-upto 1kb/s --hashlimit-name x --hashlimit-burst 1500",
			save: " --hashlimit-upto 1kb/s --hashlimit-burst 2kb --hashlimit-name x", listN: " limit: up to 1kb/s burst 2kb"},
		{opts: "--hashlimit-upto 3000b/s --hashlimit-name x", save: " --hashlimit-upto 2992b/s --hashlimit-name x", listN: " limit: up to 2992b/s"},
		{opts: "--hashlimit-upto 3000b/s --hashlimit-name x --hashlimit-htable-expire 15000", save: " --hashlimit-upto 2992b/s --hashlimit-name x", listN: " limit: up to 2992b/s"},
		{opts: "--hashlimit-upto 5kb/s --hashlimit-name x --hashlimit-rate-match", save: " --hashlimit-upto 5kb/s --hashlimit-name x --hashlimit-rate-match", listN: " limit: up to 5kb/s rate-match"},
		{opts: "--hashlimit-upto 100/sec --hashlimit-name g --hashlimit-rate-match",
			save: " --hashlimit-upto 100/sec --hashlimit-burst 5 --hashlimit-name g --hashlimit-rate-match", listN: " limit: up to 100/sec burst 5 rate-match"},
		{opts: "--hashlimit-upto 100/min --hashlimit-name g2 --hashlimit-rate-match --hashlimit-rate-interval 5",
			save:  " --hashlimit-upto 100/sec --hashlimit-burst 5 --hashlimit-name g2 --hashlimit-htable-expire 60000 --hashlimit-rate-match --hashlimit-rate-interval 5",
			listN: " limit: up to 20/sec burst 5 htable-expire 60000 rate-match rate-interval 5"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-rate-interval 3",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name x", listN: " limit: up to 20/min burst 5 htable-expire 1000"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name abcdefghijklmnopqrstuvwxyz0123456789",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name abcdefghijklmnopqrstuvwxyz0123456789", listN: " limit: up to 1/sec burst 5"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-htable-size 2000000",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name x --hashlimit-htable-size 1048576", listN: " limit: up to 1/sec burst 5 htable-size 1048576"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-htable-max 2000000 --hashlimit-htable-size 0",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name x --hashlimit-htable-max 1048576", listN: " limit: up to 1/sec burst 5 htable-max 1048576"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name y --hashlimit-mode srcip --hashlimit-srcmask 0",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name y --hashlimit-srcmask 0", listN: " limit: up to 1/sec burst 5 mode srcip srcmask 0"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-dstmask 255.255.255.0",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name x --hashlimit-dstmask 24", listN: " limit: up to 1/sec burst 5 dstmask 24"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-dstmask 0x10",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name x --hashlimit-dstmask 16", listN: " limit: up to 1/sec burst 5 dstmask 16"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-dstmask 255.255.255.255",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name x", listN: " limit: up to 1/sec burst 5"},
		{opts: "--hashlimit-upto 7/hour --hashlimit-name z", save: " --hashlimit-upto 7/hour --hashlimit-burst 5 --hashlimit-name z", listN: " limit: up to 7/hour burst 5"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-mode srcip,srcip",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name x", listN: " limit: up to 1/sec burst 5 mode srcip"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-mode srcip|dstip",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-mode srcip,dstip --hashlimit-name x", listN: " limit: up to 1/sec burst 5 mode srcip-dstip"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-mode srcip,",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name x", listN: " limit: up to 1/sec burst 5 mode srcip"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-burst 10x",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 10 --hashlimit-name x", listN: " limit: up to 1/sec burst 10"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-burst 1k",
			save: " --hashlimit-upto 1/sec --hashlimit-burst 1024 --hashlimit-name x", listN: " limit: up to 1/sec burst 1024"},
		{opts: "--hashlimit-upto 1000000/sec --hashlimit-name x", save: " --hashlimit-upto 1000000/sec --hashlimit-burst 5 --hashlimit-name x", listN: " limit: up to 1000000/sec burst 5"},
		{opts: "--hashlimit-upto 333333/sec --hashlimit-name x", save: " --hashlimit-upto 333333/sec --hashlimit-burst 5 --hashlimit-name x", listN: " limit: up to 333333/sec burst 5"},
		// 1/day with a burst of 213 overflows the kernel's credits, 214
		// wraps around far enough to pass its check (HZ 250)
		{opts: "--hashlimit-upto 1/day --hashlimit-name x --hashlimit-burst 214",
			save: " --hashlimit-upto 1/day --hashlimit-burst 214 --hashlimit-name x", listN: " limit: up to 1/day burst 214"},
	})
	// An empty --hashlimit-mode, which the option strings cannot carry.
	argv := []string{"--hashlimit-upto", "1/sec", "--hashlimit-name", "x", "--hashlimit-mode", ""}
	m, err := buildMatch("hashlimit", ruleAny, argv...)
	if err != nil {
		t.Fatal(err)
	}
	want := " --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name x"
	if got := saveOf(m); got != want {
		t.Errorf("empty mode: Save = %q, want %q", got, want)
	}
	checkLive(t, []liveRule{{ext: append([]string{"-m", "hashlimit"}, argv...), save: " -m hashlimit" + want, listN: " limit: up to 1/sec burst 5"}})
}

func TestHashlimitErrors(t *testing.T) {
	runErrVectors(t, "hashlimit", []errVector{
		{opts: "--hashlimit-upto 1/sec", err: `"--hashlimit-name" must be specified`},
		{opts: "--hashlimit-name x", err: "You have to specify --hashlimit"},
		{opts: "", err: "You have to specify --hashlimit"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-mode foo", err: `Bad value for "--hashlimit-mode"`},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-burst 0", err: "out of range (1-1000000)"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-burst 1000001", err: "out of range (1-1000000)"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-burst 1000001k", err: "out of range (1-1000000)"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-srcmask 33", err: "longer than"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-srcmask 129", err: "longer than"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-dstmask 256", err: "longer than"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-dstmask 255.0.255.0", err: "contiguous"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-srcmask 8x", err: "neither a valid network mask"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-dstmask -1", err: "neither a valid network mask"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-htable-expire 0", err: "must not be 0"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-htable-gcinterval 0", err: "must not be 0"},
		{opts: "--hashlimit-upto 1/day --hashlimit-name x --hashlimit-burst 1000000", err: "overflow"},
		{opts: "--hashlimit-upto 1/day --hashlimit-name x --hashlimit-burst 213", err: "overflow"},
		{opts: "--hashlimit-upto 1000001/sec --hashlimit-name x", err: "Rate too fast"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name ..", err: "not a valid /proc file name"},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name a/b", err: "not a valid /proc file name"},
		{opts: "--hashlimit-upto 1kb/s --hashlimit-name x --hashlimit-burst 100", err: "burst cannot be smaller than 1024b"},
		{opts: "--hashlimit-upto b/s --hashlimit-name x", err: `Bad value for "--hashlimit-upto"`},
		{opts: "--hashlimit-upto x --hashlimit-name x", err: `Bad value for "--hashlimit-upto"`},
		{opts: "--hashlimit-upto 1/sec --hashlimit-name x --hashlimit-rate-interval 0", err: `Bad value for "--hashlimit-rate-interval"`},
		{opts: "--hashlimit-upto 1/sec --hashlimit-above 1/sec --hashlimit-name x", err: "cannot be used together"},
	})
	if _, err := buildMatch("hashlimit", ruleAny, "--hashlimit-upto", "1/sec", "--hashlimit-name", ""); err == nil {
		t.Error("an empty --hashlimit-name is accepted, iptables refuses it")
	}
}

// hlPkt is a UDP packet between the given addresses and ports.
func hlPkt(src, dst string, sport, dport uint16) pkt {
	return pkt{proto: packet.ProtoUDP, src: src, dst: dst, l4: udpHdr(sport, dport)}
}

// TestHashlimitArithmetic follows the kernel's credits with a fake clock
// (HZ 250: a jiffy is 4 ms).
func TestHashlimitArithmetic(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	type step struct {
		at   time.Duration
		p    pkt
		want bool
		drop bool
	}
	a := hlPkt("10.0.0.1", "10.9.9.9", 1000, 80)
	a2 := hlPkt("10.0.0.200", "10.9.9.9", 1001, 81)
	b := hlPkt("10.0.1.1", "10.9.9.9", 1000, 80)
	cases := []struct {
		opts  string
		steps []step
	}{
		// one bucket per source: 3 each, then 2/sec (cost 125 jiffies;
		// 499 ms is 124 jiffies)
		{"--hashlimit-upto 2/sec --hashlimit-burst 3 --hashlimit-mode srcip --hashlimit-name t", []step{
			{0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, false, false},
			{0, b, true, false}, {0, b, true, false}, {0, b, true, false}, {0, b, false, false},
			{499 * time.Millisecond, a, false, false}, {500 * time.Millisecond, a, true, false}, {500 * time.Millisecond, a, false, false}}},
		// above: the inverse
		{"--hashlimit-above 2/sec --hashlimit-burst 1 --hashlimit-mode srcip --hashlimit-name t", []step{
			{0, a, false, false}, {0, a, true, false}, {0, b, false, false}}},
		// a /24 source mask puts a and a2 in one bucket
		{"--hashlimit-upto 1/hour --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-srcmask 24 --hashlimit-name t", []step{
			{0, a, true, false}, {0, a2, true, false}, {0, a, false, false}, {0, b, true, false}}},
		// no mode: one bucket for everything
		{"--hashlimit-upto 1/hour --hashlimit-burst 2 --hashlimit-name t", []step{
			{0, a, true, false}, {0, b, true, false}, {0, a2, false, false}}},
		// ports
		{"--hashlimit-upto 1/hour --hashlimit-burst 1 --hashlimit-mode dstport --hashlimit-name t", []step{
			{0, a, true, false}, {0, b, false, false}, {0, a2, true, false}}},
		// a full table hot-drops packets that need a new bucket, until
		// the collector has removed expired ones (expire 1 s, gc 1 s)
		{"--hashlimit-upto 1/sec --hashlimit-mode srcip --hashlimit-htable-size 1 --hashlimit-htable-max 2 --hashlimit-htable-expire 1000 --hashlimit-name t", []step{
			{0, a, true, false}, {0, b, true, false}, {0, hlPkt("10.7.7.7", "10.9.9.9", 1, 2), false, true},
			{0, a, true, false},
			{1500 * time.Millisecond, hlPkt("10.7.7.7", "10.9.9.9", 1, 2), true, false}}},
		// a bucket that expired but was not collected is reused as is:
		// gc every 10 s, expire after 1 s
		// (the collector first runs 10 s after the first packet)
		{"--hashlimit-upto 1/hour --hashlimit-burst 1 --hashlimit-mode srcip --hashlimit-htable-expire 1000 --hashlimit-htable-gcinterval 10000 --hashlimit-name t", []step{
			{0, a, true, false}, {5 * time.Second, a, false, false}, {9 * time.Second, a, false, false},
			// collected at 10.5 s: a starts afresh
			{10500 * time.Millisecond, b, true, false}, {11 * time.Second, a, true, false}}},
		// avg*burst wraps around 64 bits in the kernel's credits without
		// failing its check: 1/hour with a burst of 50 gives 12 packets
		{"--hashlimit-upto 1/hour --hashlimit-burst 50 --hashlimit-name t", []step{
			{0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, true, false},
			{0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, true, false},
			{0, a, false, false}}},
		// bytes: a full second of credit, 100-byte packets cost 7 chunks
		// of 64527753 credits: 9 fit in 4194304000
		{"--hashlimit-upto 1kb/s --hashlimit-name t", []step{
			{0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, true, false},
			{0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, true, false}, {0, a, false, false}}},
	}
	for _, tc := range cases {
		m := mustBuild(t, "hashlimit", ruleAny, tc.opts)
		for i, s := range tc.steps {
			p := s.p
			if strings.Contains(tc.opts, "kb/s") {
				p.l4 = append(p.l4, make([]byte, 72)...) // 100 bytes
			}
			c := ctxFor(p.view())
			c.Now = base.Add(s.at)
			if got := m.Match(c); got != s.want || c.Hotdrop != s.drop {
				t.Errorf("-m hashlimit %s, step %d (%s at +%v): Match = %v hotdrop %v, want %v hotdrop %v",
					tc.opts, i, s.p.src, s.at, got, c.Hotdrop, s.want, s.drop)
			}
		}
	}
}

// TestHashlimitShortPorts checks the hot-drop of a packet whose ports
// cannot be read, and that fragments are read as if they began with ports.
func TestHashlimitShortPorts(t *testing.T) {
	m := mustBuild(t, "hashlimit", ruleAny, "--hashlimit-upto 1/sec --hashlimit-mode dstport --hashlimit-name t")
	c := ctxFor(pkt{proto: packet.ProtoTCP, l4: []byte{0, 1, 0}}.view())
	if m.Match(c) || !c.Hotdrop {
		t.Error("3 bytes of TCP header: want a hot-drop")
	}
	c = ctxFor(pkt{proto: 47, l4: nil}.view()) // GRE has no ports: key 0
	if !m.Match(c) || c.Hotdrop {
		t.Error("GRE without payload: want a match on port 0")
	}
	c = ctxFor(pkt{proto: packet.ProtoUDP, fragWord: 100, l4: []byte{0, 1, 0, 2}}.view())
	if !m.Match(c) || c.Hotdrop {
		t.Error("a later fragment: want its first bytes read as ports")
	}
}

func TestHashlimitCredits(t *testing.T) {
	// CREDITS_PER_JIFFY for HZ 250 on 64 bits, and the byte variant.
	if hlCPJ != 1<<39 || hlCPJBytes != 1<<24 {
		t.Errorf("credits per jiffy %d and %d, want 2^39 and 2^24", hlCPJ, hlCPJBytes)
	}
	if got := hlUser2Credits(1000000); got != 1000000*137438953 {
		t.Errorf("user2credits(1/sec) = %d", got)
	}
}

// TestHashlimitConcurrent checks, under -race, that workers sharing a rule
// take exactly burst packets per bucket.
func TestHashlimitConcurrent(t *testing.T) {
	m := mustBuild(t, "hashlimit", ruleAny, "--hashlimit-upto 1/min --hashlimit-burst 50 --hashlimit-mode srcip --hashlimit-name t")
	now := time.Unix(1_800_000_000, 0)
	var passed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400; i++ {
				c := ctxFor(hlPkt(fmt.Sprintf("10.0.0.%d", i%4+1), "10.9.9.9", 1, 2).view())
				c.Now = now.Add(time.Duration(i) * time.Microsecond)
				if m.Match(c) {
					passed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := passed.Load(); got != 4*50 {
		t.Errorf("%d packets passed, want 4 buckets of 50", got)
	}
}

func BenchmarkHashlimitMatch(b *testing.B) {
	m := mustBuild(b, "hashlimit", ruleAny, "--hashlimit-upto 1000/sec --hashlimit-burst 10 --hashlimit-mode srcip,dstport --hashlimit-htable-expire 100 --hashlimit-name bench")
	var views []*packet.View
	for i := 0; i < 256; i++ {
		views = append(views, hlPkt(fmt.Sprintf("10.0.%d.%d", i/16, i%16), "10.9.9.9", 1, uint16(i%7)).view())
	}
	c := ctxFor(views[0])
	c.Now = time.Unix(1_800_000_000, 0)
	// Warm up: fill the table and let buckets expire and be collected,
	// so the steady state reuses storage.
	for i := 0; i < 100000; i++ {
		c.Pkt, c.Hotdrop = views[i%len(views)], false
		c.Now = c.Now.Add(97 * time.Microsecond)
		m.Match(c)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Pkt, c.Hotdrop = views[i%len(views)], false
		c.Now = c.Now.Add(97 * time.Microsecond)
		m.Match(c)
		i++
	}
}

// TestHashlimitKernel runs hashlimit rules through the kernel with ESP
// datagrams (whose SPI hashlimit reads as the two ports) from four local
// sources: slow rates give counts fixed by the bursts, and one fast rate is
// sent with pauses that decide each packet.
func TestHashlimitKernel(t *testing.T) {
	k := newKernelPath(t)
	k.proto = 50
	rules := []string{
		"--hashlimit-upto 1/hour --hashlimit-burst 2 --hashlimit-mode srcip",
		"--hashlimit-upto 1/hour --hashlimit-burst 3 --hashlimit-mode dstport",
		"--hashlimit-above 1/hour --hashlimit-burst 1 --hashlimit-mode srcip,srcport",
		"--hashlimit-upto 1/min --hashlimit-burst 1 --hashlimit-mode srcip --hashlimit-srcmask 31",
		"--hashlimit-upto 100b/s --hashlimit-mode srcip",
		"--hashlimit-upto 1kb/s --hashlimit-burst 3kb --hashlimit-mode srcip",
		"--hashlimit-upto 4/sec --hashlimit-burst 2",
		"--hashlimit-upto 1/hour --hashlimit-burst 50", // wraps: 12 pass
		"--hashlimit-upto 10/hour --hashlimit-mode srcip --hashlimit-htable-size 1 --hashlimit-htable-max 2",
	}
	var ms []Match
	var texts []string
	for i, r := range rules {
		r += fmt.Sprintf(" --hashlimit-name qt%d_%d", i, time.Now().UnixNano()%1e9)
		ms = append(ms, mustBuild(t, "hashlimit", ruleAny, r))
		texts = append(texts, "-m hashlimit "+r)
	}
	k.load(t, texts)
	want := make([]uint64, len(ms))
	dropped := make([]bool, len(ms))
	sent := 0
	send := func(n int) {
		for j := range n {
			src := [4]byte{127, 0, 0, byte(1 + j%4)}
			payload := make([]byte, 60)
			binary.BigEndian.PutUint16(payload[0:], uint16(j%3))
			binary.BigEndian.PutUint16(payload[2:], uint16(j%2))
			d := rawDatagramFrom(50, src, uint16(1+sent), payload)
			sent++
			c := ctxFor(viewOf(t, d))
			c.Now = time.Now()
			k.send(t, d)
			// a hot-dropped packet ends its traversal: later rules
			// never see it
			for i, m := range ms {
				if m.Match(c) {
					want[i]++
				}
				if c.Hotdrop {
					dropped[i] = true
					break
				}
			}
		}
	}
	send(12)
	time.Sleep(375 * time.Millisecond)
	send(2)
	time.Sleep(500 * time.Millisecond)
	send(3)
	got := k.counts(t)
	for i := range ms {
		if got[i] != want[i] {
			t.Errorf("%s: the kernel counts %d of %d datagrams, qtables %d", texts[i], got[i], sent, want[i])
		}
	}
	if want[7] != 12 {
		t.Errorf("1/hour with a burst of 50: %d packets passed in qtables, want 12", want[7])
	}
	if !dropped[8] {
		t.Error("the two-entry table never filled")
	}
}
