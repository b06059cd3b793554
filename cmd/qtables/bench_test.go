package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/internal/kerneltest"
)

// runBenchCmd runs a qtables command line and returns stdout, stderr and
// the exit status.
func runBenchCmd(t *testing.T, args ...string) (string, string, int) {
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

var benchKeys = []string{"rules", "packets", "pps", "pps_per_core", "ns_per_packet", "cpu_ns_per_packet", "cpu_share", "ns_p50", "ns_p99", "allocs_per_packet", "workers", "top_rules", "compiled_bytes", "compile_ms", "compile_runs"}

func assertBenchRecord(t *testing.T, rec map[string]any) {
	t.Helper()
	for _, k := range benchKeys {
		if _, ok := rec[k]; !ok {
			t.Errorf("key %q missing from %v", k, rec)
		}
	}
	if pps, _ := rec["pps"].(float64); pps <= 0 {
		t.Errorf("pps %v", rec["pps"])
	}
	if p, _ := rec["packets"].(float64); p <= 0 {
		t.Errorf("packets %v", rec["packets"])
	}
	if ns, _ := rec["ns_per_packet"].(float64); ns <= 0 {
		t.Errorf("ns_per_packet %v", rec["ns_per_packet"])
	}
	// Every rule costs at least its record; a compile takes some time
	// (compile_ms has µs resolution) and is timed 1 to 3 times.
	rules, _ := rec["rules"].(float64)
	if b, _ := rec["compiled_bytes"].(float64); b < 8*rules || b <= 0 {
		t.Errorf("compiled_bytes %v for %v rules", rec["compiled_bytes"], rules)
	}
	if ms, _ := rec["compile_ms"].(float64); ms <= 0 {
		t.Errorf("compile_ms %v", rec["compile_ms"])
	}
	if n, _ := rec["compile_runs"].(float64); n < 1 || n > 3 {
		t.Errorf("compile_runs %v", rec["compile_runs"])
	}
}

func TestBenchJSONGenerated(t *testing.T) {
	out, errs, code := runBenchCmd(t, "bench", "--gen", "fw,rules=60,chains=3", "--traffic", "packets=800", "--duration", "40ms", "--json", "--top", "3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out)
	}
	assertBenchRecord(t, rec)
	// 60 filters and 3 jump rules.
	if rec["rules"] != float64(63) || rec["workers"] != float64(1) || rec["traffic_packets"] != float64(800) {
		t.Errorf("rules %v workers %v traffic_packets %v", rec["rules"], rec["workers"], rec["traffic_packets"])
	}
	fm, _ := rec["first_match"].(map[string]any)
	if fm == nil || fm["agree"] != float64(800) || fm["packets"] != float64(800) {
		t.Errorf("first_match %v", rec["first_match"])
	}
	if top, _ := rec["top_rules"].([]any); len(top) != 3 {
		t.Errorf("top_rules %v", rec["top_rules"])
	}
	sp, _ := rec["spread"].(map[string]any)
	if sp == nil || sp["Aimed"].(float64)+sp["MissAimed"].(float64) != 800 {
		t.Errorf("spread %v", rec["spread"])
	}
}

func TestBenchWorkersAndTable(t *testing.T) {
	out, errs, code := runBenchCmd(t, "bench", "--gen", "acl,rules=30", "--traffic", "packets=300", "--duration", "30ms", "--workers", "3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"30 rules reachable from filter FORWARD", "first match: 300/300 packets agree", "compiled:  ", " ms (median of 3 compiles)", "workers", "allocs/pkt", "speedup", "rules compared per packet"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	// Worker counts 1, 2, 3: one line each.
	for _, w := range []string{"\n1 ", "\n2 ", "\n3 "} {
		if !strings.Contains(out, w) {
			t.Errorf("no row for workers %q in\n%s", w, out)
		}
	}
	out, _, code = runBenchCmd(t, "bench", "--gen", "acl,rules=30", "--traffic", "packets=300", "--duration", "20ms", "--workers", "2", "--json")
	var recs []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &recs) != nil || len(recs) != 2 {
		t.Fatalf("exit %d, want a JSON array of 2:\n%s", code, out)
	}
	for i, r := range recs {
		assertBenchRecord(t, r)
		if r["workers"] != float64(i+1) {
			t.Errorf("record %d workers %v", i, r["workers"])
		}
	}
}

func TestBenchSweepAndPlot(t *testing.T) {
	dir := t.TempDir()
	plot := filepath.Join(dir, "sweep.svg")
	out, errs, code := runBenchCmd(t, "bench", "--gen", "ipc", "--traffic", "packets=400", "--sweep", "rules=100,10,1000", "--duration", "20ms", "--json", "--plot", plot)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var recs []map[string]any
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, out)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	for i, want := range []float64{10, 100, 1000} {
		assertBenchRecord(t, recs[i])
		if recs[i]["rules"] != want {
			t.Errorf("record %d has %v rules, want %v (sizes sorted)", i, recs[i]["rules"], want)
		}
	}
	// The compiled size grows with the rules, and faster than they do
	// from 16 rules on, where chains get a classifier: the 10-rule set
	// is only its rule records, 100 times fewer than at 1000 rules.
	size := func(i int) float64 { b, _ := recs[i]["compiled_bytes"].(float64); return b }
	if !(size(0) < size(1) && size(1) < size(2)) {
		t.Errorf("compiled sizes %v, %v, %v at 10, 100, 1000 rules: not growing", size(0), size(1), size(2))
	}
	if size(2) <= 100*size(0) {
		t.Errorf("10 rules: %v bytes, 1000 rules: %v: no sign of the classifier", size(0), size(2))
	}
	// The table has the same columns.
	out, errs, code = runBenchCmd(t, "bench", "--gen", "ipc", "--traffic", "packets=400", "--sweep", "rules=10,100", "--duration", "20ms")
	if code != 0 || !strings.Contains(out, "compiled") || !strings.Contains(out, "compile ms") || !strings.Contains(out, "KiB") {
		t.Errorf("sweep table without compiled size and time (exit %d, %s):\n%s", code, errs, out)
	}
	svg, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg, new(struct{})); err != nil || !bytes.Contains(svg, []byte("<polyline")) {
		t.Errorf("plot is not an SVG line plot: %v", err)
	}
}

func TestBenchSweepRounds(t *testing.T) {
	out, errs, code := runBenchCmd(t, "bench", "--gen", "acl", "--traffic", "packets=400", "--sweep", "rules=100,10", "--rounds", "2", "--duration", "200ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || !strings.Contains(lines[0], "vs 10 rules") {
		t.Fatalf("no ratio column in the header:\n%s", out)
	}
	// The 10-rule row is compared with itself in each round: exactly 100%,
	// with no range. The 100-rule row has a percentage.
	// After rules, workers, pps, pps/core, ns/pkt and cpu ns/pkt: the
	// median ratio, then its range over the rounds unless they agree.
	first, second := strings.Fields(lines[1]), strings.Fields(lines[2])
	if first[0] != "10" || first[6] != "100%" || strings.Contains(first[7], "%") {
		t.Errorf("first row: want 100%% and no range under %q:\n%s", "vs 10 rules", out)
	}
	pct := func(s string) int {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
		if err != nil || !strings.HasSuffix(s, "%") || n <= 0 {
			t.Errorf("%q is not a percentage:\n%s", s, out)
		}
		return n
	}
	med := pct(second[6])
	if lo, hi, ok := strings.Cut(second[7], "–"); second[0] != "100" || ok && !(pct(lo+"%") <= med && med <= pct(hi)) {
		t.Errorf("second row: median %q, range %q:\n%s", second[6], second[7], out)
	}
	if !strings.Contains(out, "in 2 rounds interleaved across sizes") || !strings.Contains(out, "median over 2 rounds") {
		t.Errorf("no note on the rounds:\n%s", out)
	}

	out, errs, code = runBenchCmd(t, "bench", "--gen", "acl", "--traffic", "packets=400", "--sweep", "rules=10,100", "--rounds", "2", "--workers", "2", "--duration", "80ms", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var recs []map[string]any
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, out)
	}
	// Sizes 10 and 100, each at 1 and 2 workers.
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4", len(recs))
	}
	rounds := func(r map[string]any) []float64 {
		var out []float64
		vs, _ := r["round_cpu_ns_per_packet"].([]any)
		for _, v := range vs {
			f, _ := v.(float64)
			out = append(out, f)
		}
		return out
	}
	for i, r := range recs {
		assertBenchRecord(t, r)
		wantRules, wantWorkers := []float64{10, 10, 100, 100}[i], float64(i%2+1)
		if r["rules"] != wantRules || r["workers"] != wantWorkers {
			t.Fatalf("record %d: rules %v workers %v, want %v %v", i, r["rules"], r["workers"], wantRules, wantWorkers)
		}
		rs := rounds(r)
		if r["rounds"] != float64(2) || len(rs) != 2 || rs[0] <= 0 || rs[1] <= 0 {
			t.Errorf("record %d: rounds %v, round_cpu_ns_per_packet %v", i, r["rounds"], r["round_cpu_ns_per_packet"])
		}
		med, _ := r["ratio_to_first"].(float64)
		lo, _ := r["ratio_to_first_min"].(float64)
		hi, _ := r["ratio_to_first_max"].(float64)
		if i < 2 {
			if med != 1 || lo != 1 || hi != 1 {
				t.Errorf("first size, %v workers: ratio %v (%v-%v), want 1 in every round", wantWorkers, med, lo, hi)
			}
			continue
		}
		// Each round's ratio is the first size's CPU time per packet in
		// that round, at the same workers, over this one's; of two rounds
		// the median is their mean.
		fr := rounds(recs[i-2])
		r0, r1 := fr[0]/rs[0], fr[1]/rs[1]
		near := func(got, want float64) bool { return math.Abs(got-want) <= 0.01*want }
		if !near(lo, math.Min(r0, r1)) || !near(hi, math.Max(r0, r1)) || !near(med, (r0+r1)/2) {
			t.Errorf("record %d: ratio %v (%v-%v), from the rounds %v and %v: %v, %v", i, med, lo, hi, fr, rs, r0, r1)
		}
	}
	// The combined figures are over both rounds: the CPU time per packet
	// lies between the rounds'.
	for i, r := range recs {
		rs := rounds(r)
		cpu, _ := r["cpu_ns_per_packet"].(float64)
		if cpu < math.Min(rs[0], rs[1])-0.1 || cpu > math.Max(rs[0], rs[1])+0.1 {
			t.Errorf("record %d: cpu_ns_per_packet %v outside its rounds %v", i, cpu, rs)
		}
	}
}

func TestBenchRoundsDefault(t *testing.T) {
	// 3 rounds with --sweep, 1 without; no ratio without --sweep.
	for _, tc := range []struct {
		args   []string
		rounds float64
	}{
		{[]string{"--sweep", "rules=10,20"}, 3},
		{nil, 1},
	} {
		args := append([]string{"bench", "--gen", "acl,rules=10", "--traffic", "packets=200", "--duration", "30ms", "--json"}, tc.args...)
		out, errs, code := runBenchCmd(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, errs)
		}
		var recs []map[string]any
		if tc.args == nil {
			var rec map[string]any
			if err := json.Unmarshal([]byte(out), &rec); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec)
		} else if err := json.Unmarshal([]byte(out), &recs); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r["rounds"] != tc.rounds {
				t.Errorf("%v: rounds %v, want %v", tc.args, r["rounds"], tc.rounds)
			}
			if rs, _ := r["round_cpu_ns_per_packet"].([]any); float64(len(rs)) != tc.rounds {
				t.Errorf("%v: round_cpu_ns_per_packet %v", tc.args, r["round_cpu_ns_per_packet"])
			}
			if _, ok := r["ratio_to_first"]; ok != (tc.args != nil) {
				t.Errorf("%v: ratio_to_first %v", tc.args, r["ratio_to_first"])
			}
		}
	}
}

func TestBenchRoundsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--rounds", "0"},
		{"bench", "--sweep", "rules=10,100", "--rounds", "-1"},
		{"bench", "--rounds", "5", "--duration", "4ms"},
	} {
		if _, errs, code := runBenchCmd(t, args...); code != 2 || !strings.Contains(errs, "qtables bench: --rounds") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message naming --rounds", args, code, errs)
		}
	}
}

const tinyClassBench = "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t22 : 22\t0x06/0xFF\t0x0000/0x0000\t\n" +
	"@0.0.0.0/0\t192.0.2.0/24\t1024 : 65535\t53 : 53\t0x00/0x00\t0x0000/0x0000\t\n" +
	"@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t1 : 2\t0x2f/0xFF\t0x0000/0x0000\t\n" +
	"@172.16.0.0/12\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x01/0xFF\t0x1000/0x1000\t\n"

func TestClassbench2iptables(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cb")
	if err := os.WriteFile(path, []byte(tinyClassBench), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code := runBenchCmd(t, "classbench2iptables", "--actions", "alternate", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// Written by hand from the conversion rules; the rule lines are in the
	// form iptables-save 1.8.9 prints (-p by name for tcp/udp/icmp, -m
	// before its options, single ports without a range).
	want := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" +
		"-A FORWARD -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT\n" +
		"-A FORWARD -d 192.0.2.0/24 -p tcp -m tcp --sport 1024:65535 --dport 53 -j DROP\n" +
		"-A FORWARD -d 192.0.2.0/24 -p udp -m udp --sport 1024:65535 --dport 53 -j DROP\n" +
		"-A FORWARD -s 172.16.0.0/12 -p icmp -j DROP\n" +
		"COMMIT\n"
	body := out[strings.Index(out, "*filter"):]
	if body != want {
		t.Errorf("got\n%s\nwant\n%s", body, want)
	}
	if !strings.HasPrefix(out, "# ClassBench ") || !strings.Contains(errs, "1 filters left out") {
		t.Errorf("header %q, stderr %q", out[:strings.Index(out, "\n")], errs)
	}
	if _, err := engine.Parse("out", strings.NewReader(out)); err != nil {
		t.Errorf("output does not load: %v", err)
	}
	// bench --classbench measures the same set and checks first match.
	out, errs, code = runBenchCmd(t, "bench", "--classbench", path, "--duration", "20ms", "--json")
	if code != 0 {
		t.Fatalf("bench exit %d: %s", code, errs)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatal(err)
	}
	assertBenchRecord(t, rec)
	if fm, _ := rec["first_match"].(map[string]any); fm == nil || fm["agree"] != fm["packets"] {
		t.Errorf("first_match %v", rec["first_match"])
	}
}

func TestBenchPcapAndSave(t *testing.T) {
	dir := t.TempDir()
	rules, pcap := filepath.Join(dir, "rules"), filepath.Join(dir, "t.pcap")
	// Save a generated set and its traffic, then measure them as files.
	_, errs, code := runBenchCmd(t, "bench", "--gen", "acl,rules=20", "--traffic", "packets=200", "--duration", "10ms", "--save-rules", rules, "--save-pcap", pcap)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	out, errs, code := runBenchCmd(t, "bench", "--rules", rules, "--pcap", pcap, "--duration", "20ms", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatal(err)
	}
	assertBenchRecord(t, rec)
	if rec["rules"] != float64(20) || rec["traffic_packets"] != float64(200) || rec["first_match"] != nil {
		t.Errorf("rules %v traffic_packets %v first_match %v", rec["rules"], rec["traffic_packets"], rec["first_match"])
	}
	// --rules with generated traffic and a sweep that cuts the set.
	out, errs, code = runBenchCmd(t, "bench", "--rules", rules, "--sweep", "rules=5,50", "--duration", "10ms", "--traffic", "packets=100")
	if code != 0 || !strings.Contains(out, "\n       5        1 ") || !strings.Contains(errs, "skipping size 50") {
		t.Errorf("exit %d\n%s\n%s", code, out, errs)
	}
	// --synth traffic.
	if _, errs, code := runBenchCmd(t, "bench", "--gen", "acl,rules=10", "--synth", "flows=5", "--duration", "10ms"); code != 0 {
		t.Errorf("--synth: exit %d: %s", code, errs)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--gen", "acl", "--classbench", "x"},
		{"bench", "--pcap", "a", "--synth", "b"},
		{"bench", "--workers", "0"},
		{"bench", "--plot", "x.svg"},
		{"bench", "--sweep", "size=10"},
		{"bench", "--sweep", "rules=0"},
		{"bench", "--gen", "tree"},
		{"bench", "--traffic", "miss=3"},
		{"bench", "--actions", "reject"},
		{"bench", "--sweep", "rules=10", "--save-rules", "x"},
	} {
		if _, errs, code := runBenchCmd(t, args...); code != 2 || !strings.Contains(errs, "qtables bench:") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, errs)
		}
	}
}

func TestBenchKernel(t *testing.T) {
	if _, errs, code := runBenchCmd(t, "bench", "--kernel", "--chain", "INPUT"); code != 2 || !strings.Contains(errs, "FORWARD") {
		t.Errorf("--kernel at INPUT: exit %d, %q", code, errs)
	}
	kerneltest.Require(t, "ip", "iptables", "iptables-restore", "iptables-save")
	out, errs, code := runBenchCmd(t, "bench", "--gen", "acl,rules=40,chains=2,actions=alternate", "--traffic", "packets=600", "--duration", "80ms", "--kernel", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatal(err)
	}
	assertBenchRecord(t, rec)
	k, _ := rec["kernel"].(map[string]any)
	if k == nil {
		t.Fatalf("no kernel object in %s", out)
	}
	if k["counters_agree"] != true {
		t.Errorf("kernel counters differ: %v", k["counter_diffs"])
	}
	for _, key := range []string{"pps", "ns_per_packet", "accept_all_ns_per_packet", "drop_all_ns_per_packet", "eval_ns_per_packet", "noise_ns_per_packet"} {
		if _, ok := k[key]; !ok {
			t.Errorf("kernel key %q missing", key)
		}
	}
	if k["sent"] == float64(0) || k["sent"] != k["reached_forward"] {
		t.Errorf("sent %v, reached FORWARD %v", k["sent"], k["reached_forward"])
	}
}
