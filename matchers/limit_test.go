package matchers

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The save and list forms are what iptables 1.8.9 (nf_tables) prints after
// its round trip through the nftables limit expression; the "iptables"
// subtests check each against the installed one.
func TestLimitFormats(t *testing.T) {
	v := func(opts, rate string, burst int) fmtVector {
		save := " --limit " + rate
		if burst != 5 {
			save += fmt.Sprintf(" --limit-burst %d", burst)
		}
		return fmtVector{opts: opts, save: save, listN: fmt.Sprintf(" limit: avg %s burst %d", rate, burst)}
	}
	runFmtVectors(t, "limit", []fmtVector{
		v("", "3/hour", 5),
		v("--limit 1/sec", "1/sec", 5),
		v("--limit 1/min", "1/min", 5),
		v("--limit 1000/hour", "1000/hour", 5),
		v("--limit 1000/day", "1000/day", 5),
		v("--limit 1/sec --limit-burst 1", "1/sec", 1),
		v("--limit 5/min", "5/min", 5),
		v("--limit 60/min", "1/sec", 5),
		v("--limit 120/hour", "2/min", 5),
		v("--limit 7/hour", "7/hour", 5),
		v("--limit 13/hour", "13/hour", 5),
		v("--limit 601/hour", "601/hour", 5),
		v("--limit 31/day", "31/day", 5),
		v("--limit 86401/day", "1/sec", 5),
		v("--limit 9999/sec", "10000/sec", 5),
		v("--limit 7000/sec", "10000/sec", 5),
		v("--limit 3/sec", "3/sec", 5),
		v("--limit 7/min", "7/min", 5),
		v("--limit 3", "3/sec", 5),
		v("--limit 2/d", "2/day", 5),
		v("--limit 9/d", "9/day", 5),
		v("--limit 1/mi", "1/min", 5),
		v("--limit 1/minute", "1/min", 5),
		v("--limit 1/SeC", "1/sec", 5),
		v("--limit 5x/min", "5/min", 5),
		v("--limit 4294967297/sec", "1/sec", 5), // atoi wraps to 1
		v("--limit 1/day", "1/day", 5),          // xt_limit would refuse it: nft does not
		v("--limit 1/day --limit-burst 10000", "1/day", 10000),
		v("--limit 1/hour --limit-burst 10000", "1/hour", 10000),
		v("--limit 5/s --limit-burst 0", "5/sec", 5), // the kernel takes 0 as 5
		v("--limit-burst 0x10", "3/hour", 16),
		v("--limit 4/h --limit-burst 1", "4/hour", 1),
	})
}

func TestLimitErrors(t *testing.T) {
	runErrVectors(t, "limit", []errVector{
		{opts: "--limit 10001/sec", err: "Rate too fast"},
		{opts: "--limit -5/sec", err: "Rate too fast"},
		{opts: "--limit 2147483648/day", err: "Rate too fast"},
		{opts: "--limit 0/sec", err: "bad rate"},
		{opts: "--limit x/sec", err: "bad rate"},
		{opts: "--limit 1/", err: "bad rate"},
		{opts: "--limit /sec", err: "bad rate"},
		{opts: "--limit 3/fortnight", err: "bad rate"},
		{opts: "--limit 1/MINUTES", err: "bad rate"},
		{opts: "--limit 7/HOURS", err: "bad rate"},
		{opts: "--limit-burst 10001", err: "out of range"},
		{opts: "--limit-burst -1", err: "out of range"},
		{opts: "! --limit 1/sec", err: "cannot be inverted"},
	})
}

// limitAt evaluates m at base+d and reports the result.
func limitAt(m Match, base time.Time, d time.Duration) bool {
	c := ctxFor(pkt{proto: 17, l4: udpHdr(1, 2)}.view())
	c.Now = base.Add(d)
	return m.Match(c)
}

// TestLimitArithmetic follows nft_limit's nanosecond bucket with a fake
// clock.
func TestLimitArithmetic(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	type step struct {
		at   time.Duration
		want bool
	}
	cases := []struct {
		opts  string
		steps []step
	}{
		// the bucket starts full: burst packets at once, then none
		{"--limit 2/sec --limit-burst 3", []step{{0, true}, {0, true}, {0, true}, {0, false},
			// cost is 500ms: half a second buys one packet
			{499 * time.Millisecond, false}, {500 * time.Millisecond, true}, {500 * time.Millisecond, false}}},
		// cost 1e9/3 = 333333333 ns; a failing evaluation still moves
		// the clock, without losing the tokens it found
		{"--limit 3/sec --limit-burst 1", []step{{0, true}, {333333332, false}, {333333333, true}, {333333334, false}}},
		// refill is capped at the bucket: a long pause buys burst
		// packets only
		{"--limit 10/sec --limit-burst 2", []step{{0, true}, {0, true}, {0, false},
			{time.Hour, true}, {time.Hour, true}, {time.Hour, false}}},
		// 120/hour is 2/min: one packet per 30 s
		{"--limit 120/hour --limit-burst 1", []step{{0, true}, {29 * time.Second, false}, {30 * time.Second, true}}},
		// a burst of 0 is 5
		{"--limit 1/hour --limit-burst 0", []step{{0, true}, {0, true}, {0, true}, {0, true}, {0, true}, {0, false}}},
		// 7000/sec becomes 10000/second: 100µs per packet
		{"--limit 7000/sec --limit-burst 1", []step{{0, true}, {99 * time.Microsecond, false}, {100 * time.Microsecond, true}}},
		// time going backwards adds nothing and keeps the clock
		{"--limit 1/sec --limit-burst 1", []step{{10 * time.Second, true}, {5 * time.Second, false}, {10*time.Second + 999*time.Millisecond, false}, {11 * time.Second, true}}},
	}
	for _, tc := range cases {
		m := mustBuild(t, "limit", ruleAny, tc.opts)
		for i, s := range tc.steps {
			if got := limitAt(m, base, s.at); got != s.want {
				t.Errorf("-m limit %s, step %d at +%v: Match = %v, want %v", tc.opts, i, s.at, got, s.want)
			}
		}
	}
}

// TestLimitConcurrent checks, under -race, that workers sharing one rule
// take exactly burst packets from a bucket that does not refill.
func TestLimitConcurrent(t *testing.T) {
	m := mustBuild(t, "limit", ruleAny, "--limit 1/day --limit-burst 777")
	now := time.Unix(1_800_000_000, 0)
	var passed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ctxFor(pkt{proto: 17, l4: udpHdr(1, 2)}.view())
			for i := 0; i < 500; i++ {
				c.Now = now.Add(time.Duration(i) * time.Nanosecond)
				if m.Match(c) {
					passed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := passed.Load(); got != 777 {
		t.Errorf("%d packets passed, want the burst of 777", got)
	}
}

func BenchmarkLimitMatch(b *testing.B) {
	m := mustBuild(b, "limit", ruleAny, "--limit 1000/sec --limit-burst 10")
	c := ctxFor(pkt{proto: 17, l4: udpHdr(1, 2)}.view())
	c.Now = time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	for b.Loop() {
		c.Now = c.Now.Add(700 * time.Microsecond)
		m.Match(c)
	}
}

// TestLimitKernel runs limit rules through the kernel: slow rates whose
// bucket cannot refill while the test runs (exactly burst packets pass),
// and one fast rate with pauses long enough (a quarter of the cost and
// more away from every boundary) to decide each packet.
func TestLimitKernel(t *testing.T) {
	k := newKernelPath(t)
	rules := []string{
		"--limit 1/hour --limit-burst 1",
		"--limit 3/hour",
		"--limit 2/min --limit-burst 7",
		"--limit 1/day --limit-burst 0",
		"--limit 120/hour --limit-burst 3",
		"--limit 4/sec --limit-burst 2",
	}
	var ms []Match
	var texts []string
	for _, r := range rules {
		ms = append(ms, mustBuild(t, "limit", ruleAny, r))
		texts = append(texts, "-m limit "+r)
	}
	k.load(t, texts)
	want := make([]uint64, len(ms))
	c := ctxFor(pkt{proto: 17, l4: udpHdr(1, 2)}.view())
	send := func(n int) {
		for range n {
			c.Now = time.Now()
			k.send(t, rawDatagram(1, nil))
			for i, m := range ms {
				if m.Match(c) {
					want[i]++
				}
			}
		}
	}
	send(3)
	time.Sleep(375 * time.Millisecond)
	send(2)
	time.Sleep(500 * time.Millisecond)
	send(3)
	got := k.counts(t)
	for i := range ms {
		if got[i] != want[i] {
			t.Errorf("%s: the kernel counts %d of 8 datagrams, qtables %d", texts[i], got[i], want[i])
		}
	}
	if want[5] != 5 {
		t.Errorf("--limit 4/sec --limit-burst 2 passed %d datagrams in qtables, want 2+1+2", want[5])
	}
}
