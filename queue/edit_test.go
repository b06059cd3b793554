package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"

	"github.com/qtables/qtables/bench"
	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
)

// Live edits on a 10,000-rule set: the control socket's -A, -I and -D
// reach the packet path on the next packet, and rules they leave alone
// keep their counters.

// rules10k is a 10,000-rule FORWARD chain (policy DROP, every rule
// ACCEPT): set is "gen:KIND" (bench's generated families) or a ClassBench
// file in /work/shared/classbench; tb is skipped when that is missing.
func rules10k(tb testing.TB, set string) string {
	tb.Helper()
	if kind, ok := strings.CutPrefix(set, "gen:"); ok {
		text, _, err := bench.GenerateRules(bench.RuleSpec{Kind: kind, Rules: 10000, Seed: 1, Actions: "accept", Policy: "DROP"}, "FORWARD")
		if err != nil {
			tb.Fatal(err)
		}
		return text
	}
	fs, err := bench.LoadClassBench(filepath.Join("/work/shared/classbench", set))
	if err != nil {
		tb.Skipf("ClassBench set %s is not available (%v): skipping", set, err)
	}
	text, _, _, err := bench.ClassBenchRules(fs, "accept", bench.EmitOptions{Chain: "FORWARD", Policy: "DROP"})
	if err != nil {
		tb.Fatal(err)
	}
	return text
}

// ctl sends one iptables command line through the control socket at path.
func ctl(t *testing.T, path string, args ...string) ControlReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := ControlCall(ctx, path, &ControlRequest{Op: OpIptables, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestControlEdit10k drives a daemon holding 10,000 rules through its
// control socket (no NFQUEUE: packets go straight to the worker's handle,
// as the reader would hand them over) and checks, after each of -A, -I,
// -D by rule and -D by number, that the next packet is judged by the new
// rules and that every rule the command left alone, and the policy, kept
// its counters (iptables-nft changes single rules; it does not reload the
// table).
func TestControlEdit10k(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 rules: not with -short")
	}
	d := testDaemon(t, rules10k(t, "gen:acl"), io.Discard, &bytes.Buffer{})
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := d.listenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.serve(ctx)
	defer srv.close()

	w := d.newWorker()
	q := &fakeQueue{}
	sport := uint16(10000)
	// send hands one TCP SYN from src to the daemon and returns its
	// verdict; each has its own source port, so each is a new flow.
	send := func(src string) int {
		sport++
		d.handle(w, &job{q: q, id: uint32(sport), data: tcpSyn(src, "198.51.100.9", sport, 9), hook: uint8(matchers.HookForward)})
		return q.v[len(q.v)-1].verdict
	}
	// A source the 10,000 rules leave to the policy: DROP.
	src := ""
	for i := 1; i < 250 && src == ""; i++ {
		if s := fmt.Sprintf("203.0.113.%d", i); send(s) == nfqueue.NfDrop {
			src = s
		}
	}
	if src == "" {
		t.Fatal("every candidate packet is accepted by the generated rules")
	}

	set := d.Rules().Set
	fwd := func() *engine.Chain { return d.Rules().Set.Table("filter").Chain("FORWARD") }
	if n := len(fwd().Rules); n != 10000 {
		t.Fatalf("%d rules, want 10000", n)
	}
	// Counters on rules the edits leave alone (found by their text,
	// which is unique in the chain), and on the policy.
	watched := map[string][2]uint64{}
	for i, k := range []int{0, 1, 4999, 9999} {
		r := set.Table("filter").Chain("FORWARD").Rules[k]
		r.Counters.Set(uint64(100+i), uint64(1000+i))
		watched[r.String()] = [2]uint64{uint64(100 + i), uint64(1000 + i)}
	}
	policy := uint64(50)
	fwd().Counters.Set(policy, 5000)
	checkKept := func(step string) {
		t.Helper()
		for text, want := range watched {
			var found []int
			for k, x := range fwd().Rules {
				if x.String() == text {
					found = append(found, k)
				}
			}
			if len(found) != 1 {
				t.Errorf("%s: rule %q found at %v, want once", step, text, found)
				continue
			}
			if p, b := fwd().Rules[found[0]].Counters.Get(); p != want[0] || b != want[1] {
				t.Errorf("%s: rule %d (%s) has counters %d/%d, want %d/%d", step, found[0]+1, text, p, b, want[0], want[1])
			}
		}
		if p, _ := fwd().Counters.Get(); p != policy {
			t.Errorf("%s: policy counters %d packets, want %d", step, p, policy)
		}
	}

	// -A: the new last rule accepts the next packet and counts it.
	if rep := ctl(t, sock, "-A", "FORWARD", "-s", src, "-p", "tcp", "-j", "ACCEPT"); rep.Code != 0 {
		t.Fatalf("-A: %+v", rep)
	}
	if v := send(src); v != nfqueue.NfAccept {
		t.Errorf("after -A: verdict %d, want ACCEPT", v)
	}
	appended := fwd().Rules[10000]
	if p, _ := appended.Counters.Get(); p != 1 || len(fwd().Rules) != 10001 {
		t.Errorf("after -A: %d rules, the new one counted %d packets, want 10001 and 1", len(fwd().Rules), p)
	}
	watched[appended.String()] = [2]uint64{1, 40}
	checkKept("-A")

	// -I 1: a DROP in front; the rules behind it keep their counters
	// under their new numbers.
	if rep := ctl(t, sock, "-I", "FORWARD", "1", "-s", src, "-j", "DROP"); rep.Code != 0 {
		t.Fatalf("-I: %+v", rep)
	}
	if v := send(src); v != nfqueue.NfDrop {
		t.Errorf("after -I 1: verdict %d, want DROP", v)
	}
	if p, _ := fwd().Rules[0].Counters.Get(); p != 1 {
		t.Errorf("after -I 1: the inserted rule counted %d packets, want 1", p)
	}
	checkKept("-I")

	// -D by rule: the appended ACCEPT decides again.
	if rep := ctl(t, sock, "-D", "FORWARD", "-s", src, "-j", "DROP"); rep.Code != 0 {
		t.Fatalf("-D rule: %+v", rep)
	}
	if v := send(src); v != nfqueue.NfAccept {
		t.Errorf("after -D rule: verdict %d, want ACCEPT", v)
	}
	watched[appended.String()] = [2]uint64{2, 80}
	checkKept("-D rule")

	// -D by number: back to the policy, which counts the packet.
	delete(watched, appended.String())
	if rep := ctl(t, sock, "-D", "FORWARD", "10001"); rep.Code != 0 {
		t.Fatalf("-D 10001: %+v", rep)
	}
	if v := send(src); v != nfqueue.NfDrop {
		t.Errorf("after -D 10001: verdict %d, want the DROP policy", v)
	}
	policy++
	checkKept("-D number")
	if n := len(fwd().Rules); n != 10000 {
		t.Errorf("%d rules at the end, want 10000", n)
	}
	// The saved counters agree: iptables-save -c through the socket.
	rep, err := ControlCall(ctx, sock, &ControlRequest{Op: OpSave})
	if err != nil || rep.Code != 0 {
		t.Fatalf("save: %+v %v", rep, err)
	}
	if want := fmt.Sprintf(":FORWARD DROP [%d:", policy); !strings.Contains(rep.Stdout, want) {
		t.Errorf("saved rules lack %q", want)
	}
	if want := "[103:1003] -A FORWARD " + fwd().Rules[9999].String() + "\n"; !strings.Contains(rep.Stdout, want) {
		t.Errorf("saved rules lack %q", want)
	}
}

// TestControlDeleteDuplicate: of two equal rules, -D deletes the first and
// the second keeps its own counters, as iptables-nft 1.8.9 does (checked
// in a namespace: [7:700] and [3:300] of the same rule, -D of it, saves
// [3:300]); and -P zeroes its policy counters while -A keeps them.
func TestControlDeleteDuplicate(t *testing.T) {
	d := testDaemon(t, testRules, io.Discard, &bytes.Buffer{})
	ctx := context.Background()
	for _, args := range [][]string{
		{"-A", "FORWARD", "-s", "10.9.9.9", "-j", "ACCEPT", "-c", "7", "700"},
		{"-A", "FORWARD", "-s", "10.9.9.9", "-j", "ACCEPT", "-c", "3", "300"},
		{"-D", "FORWARD", "-s", "10.9.9.9", "-j", "ACCEPT"},
	} {
		if rep := d.control(ctx, &ControlRequest{Op: OpIptables, Args: args}); rep.Code != 0 {
			t.Fatalf("%q: %+v", args, rep)
		}
	}
	var n int
	for _, r := range d.Rules().Set.Table("filter").Chain("FORWARD").Rules {
		if strings.Contains(r.String(), "10.9.9.9") {
			n++
			if p, b := r.Counters.Get(); p != 3 || b != 300 {
				t.Errorf("the remaining rule has %d/%d, want its own 3/300", p, b)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d rules left, want 1", n)
	}
	fwd := func() *engine.Chain { return d.Rules().Set.Table("filter").Chain("FORWARD") }
	fwd().Counters.Set(5, 100)
	if rep := d.control(ctx, &ControlRequest{Op: OpIptables, Args: []string{"-A", "FORWARD", "-s", "10.8.8.8"}}); rep.Code != 0 {
		t.Fatal(rep)
	}
	if p, b := fwd().Counters.Get(); p != 5 || b != 100 {
		t.Errorf("after -A: policy counters %d/%d, want 5/100", p, b)
	}
	if rep := d.control(ctx, &ControlRequest{Op: OpIptables, Args: []string{"-P", "FORWARD", policyName(fwd().Policy)}}); rep.Code != 0 {
		t.Fatal(rep)
	}
	if p, b := fwd().Counters.Get(); p != 0 || b != 0 {
		t.Errorf("after -P to the same policy: policy counters %d/%d, want 0/0", p, b)
	}
}

func policyName(v matchers.Verdict) string {
	if v == matchers.Drop {
		return "DROP"
	}
	return "ACCEPT"
}

// legacyCommand is how Command carried out an edit before Clone and
// Recompile: the rules in force copied through iptables-save text, the
// copy parsed, the command run, everything compiled, the counters of
// rules with the same text carried over. BenchmarkEdit10k runs it side by
// side with Command for the ratio.
func (d *Daemon) legacyCommand(cmd *engine.Command) error {
	d.editMu.Lock()
	defer d.editMu.Unlock()
	cur := d.rules.Load()
	var buf bytes.Buffer
	if err := cur.Set.Save(&buf, engine.SaveOptions{Counters: true}); err != nil {
		return err
	}
	rs, err := engine.Parse(cur.Source, &buf)
	if err != nil {
		return err
	}
	if err := rs.Run(io.Discard, cmd); err != nil {
		return err
	}
	r, err := CompileRules(rs, cur.Source)
	if err != nil {
		return err
	}
	d.swapRules(r)
	return nil
}

// processCPU is the CPU time (user and system, all threads) the process
// has used: unlike wall time it does not grow when other processes take
// the CPU of a shared machine.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEdit10k measures a live edit of a 10,000-rule FORWARD chain as
// the control socket carries it out (parse the command line, apply it to
// a copy of the rules in force, compile, swap in): -A of one rule, -D of
// one rule by its text (from the middle of the chain) and by number. One
// op is one edit; the set is put back untimed after each. "legacy" runs
// the same edits the way Command did before (copy through iptables-save
// text, compile all), "compile" is a full compile of the set, for scale.
// cpu-ns/op is the process's CPU time in the timed edits.
//
//	go test -run '^$' -bench Edit10k ./queue
func BenchmarkEdit10k(b *testing.B) {
	for _, set := range []string{"gen:acl", "acl1_10k"} {
		b.Run(set, func(b *testing.B) {
			d := testDaemon(b, rules10k(b, set), io.Discard, &bytes.Buffer{})
			ctx := context.Background()
			rules := d.Rules().Set.Table("filter").Chain("FORWARD").Rules
			mid := strings.Fields(rules[len(rules)/2].String())
			n := len(rules)
			var cpu time.Duration
			var do func(b *testing.B, legacy bool, args []string)
			timed := func(b *testing.B, legacy bool, args []string) {
				b.Helper()
				c0 := processCPU(b)
				do(b, legacy, args)
				cpu += processCPU(b) - c0
			}
			report := func(b *testing.B) {
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
				cpu = 0
			}
			do = func(b *testing.B, legacy bool, args []string) {
				b.Helper()
				if !legacy {
					if rep := d.control(ctx, &ControlRequest{Op: OpIptables, Args: args}); rep.Code != 0 {
						b.Fatalf("%q: %+v", args, rep)
					}
					return
				}
				cmd, err := engine.ParseCommand(args)
				if err != nil {
					b.Fatal(err)
				}
				if err := d.legacyCommand(cmd); err != nil {
					b.Fatalf("%q: %v", args, err)
				}
			}
			add := []string{"-A", "FORWARD", "-s", "203.0.113.7", "-p", "tcp", "-m", "tcp", "--dport", "9", "-j", "ACCEPT"}
			last := []string{"-D", "FORWARD", fmt.Sprint(n + 1)}
			for _, legacy := range []bool{false, true} {
				name := ""
				if legacy {
					name = "legacy/"
				}
				b.Run(name+"A", func(b *testing.B) {
					for b.Loop() {
						timed(b, legacy, add)
						b.StopTimer()
						do(b, legacy, last)
						b.StartTimer()
					}
					report(b)
				})
				b.Run(name+"D-rule", func(b *testing.B) {
					for b.Loop() {
						timed(b, legacy, append([]string{"-D", "FORWARD"}, mid...))
						b.StopTimer()
						do(b, legacy, append([]string{"-I", "FORWARD", fmt.Sprint(n / 2)}, mid...))
						b.StartTimer()
					}
					report(b)
				})
				b.Run(name+"D-num", func(b *testing.B) {
					for b.Loop() {
						b.StopTimer()
						do(b, legacy, add)
						b.StartTimer()
						timed(b, legacy, last)
					}
					report(b)
				})
			}
			b.Run("compile", func(b *testing.B) {
				rs := d.Rules().Set
				c0 := processCPU(b)
				for b.Loop() {
					if _, err := engine.Compile(rs); err != nil {
						b.Fatal(err)
					}
				}
				cpu = processCPU(b) - c0
				report(b)
			})
			if got := len(d.Rules().Set.Table("filter").Chain("FORWARD").Rules); got != n {
				b.Fatalf("%d rules after the edits, want %d", got, n)
			}
		})
	}
}

// TestControlEditUnderLoad: control-socket edits while workers judge
// packets lose no count: the rule the edits leave alone and the policy
// (whose counters the swap carries over) count every packet sent to them,
// and the rule that comes and goes counts only while it is there.
func TestControlEditUnderLoad(t *testing.T) {
	// 1,500 more rules that the packets miss, so that compiling takes a
	// while and packets arrive between the copy and the swap.
	var fill strings.Builder
	for i := 0; i < 1500; i++ {
		fmt.Fprintf(&fill, "-A FORWARD -s 192.0.%d.%d/32 -p tcp -m tcp --dport %d -j DROP\n", i/250, i%250, 1000+i)
	}
	d := testDaemon(t, strings.Replace(reloadA, "COMMIT\n", fill.String()+"COMMIT\n", 1), io.Discard, &bytes.Buffer{})
	d.reloadMu.Lock()
	d.pool = []*worker{d.newWorker(), d.newWorker()}
	d.reloadMu.Unlock()
	const perWorker = 20000
	var wg sync.WaitGroup
	for k, w := range d.pool {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			q := &discardQueue{}
			// Worker 0 sends to the port 80 rule, worker 1 to the policy.
			p := tcpSyn("10.0.1.2", "10.0.2.2", 1, []uint16{80, 99}[k])
			for i := 0; i < perWorker; i++ {
				w.mu.Lock()
				d.handle(w, &job{q: q, id: 1, data: p, hook: uint8(matchers.HookForward)})
				w.mu.Unlock()
			}
		}(w)
	}
	ctx := context.Background()
	for i := 0; i < 12; i++ {
		args := []string{"-I", "FORWARD", "1", "-p", "icmp", "-j", "ACCEPT"}
		if i%2 == 1 {
			args = []string{"-D", "FORWARD", "-p", "icmp", "-j", "ACCEPT"}
		}
		if rep := d.control(ctx, &ControlRequest{Op: OpIptables, Args: args}); rep.Code != 0 {
			t.Fatalf("%q: %+v", args, rep)
		}
	}
	wg.Wait()
	fwd := d.Rules().Set.Table("filter").Chain("FORWARD")
	if got := fwd.Rules[0].String(); got != "-p tcp -m tcp --dport 80 -j ACCEPT" {
		t.Fatalf("rule 1 is %q after the edits", got)
	}
	if p, _ := fwd.Rules[0].Counters.Get(); p != perWorker {
		t.Errorf("port 80 rule counted %d packets, want %d", p, perWorker)
	}
	if p, _ := fwd.Counters.Get(); p != perWorker {
		t.Errorf("FORWARD policy counted %d packets, want %d", p, perWorker)
	}
}
