package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/internal/netns"
)

// step is one iptables command line run both by the kernel (iptables in
// a throwaway namespace) and by qtables --file.
type step struct {
	args []string
	// fail: the command must fail (checked against the kernel too, so a
	// list of failing commands cannot silently turn into passing ones).
	fail bool
	// ignoreStdout: iptables-nft prints something qtables cannot know
	// (e.g. -Z -v names only the chains nf_tables has instantiated).
	ignoreStdout bool
}

func ok(cmdline string) step    { return step{args: splitArgs(cmdline)} }
func bad(cmdline string) step   { return step{args: splitArgs(cmdline), fail: true} }
func quiet(cmdline string) step { return step{args: splitArgs(cmdline), ignoreStdout: true} }

// splitArgs splits a command line on spaces; double quotes group.
func splitArgs(s string) []string {
	var args []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		args = append(args, cur.String())
	}
	return args
}

// kernelSequences are run step by step against iptables (nf_tables) in a
// fresh namespace and against a fresh rules file.
var kernelSequences = []struct {
	name  string
	steps []step
	// knownBug names a bug outside this package's files that makes the
	// sequence differ: the differences are reported as a skip, and the
	// test fails once the sequence passes so that the marker goes.
	knownBug string
}{
	{"article", []step{
		// The walk-through of a classic iptables article: list, append,
		// insert, delete by number, replace, policy, custom chains, LOG
		// with a prefix, mangle MARK rules.
		ok("-L -v"),
		ok("-t filter -A INPUT -s 192.168.1.146 -j DROP"),
		ok("-A INPUT -i lo -j ACCEPT"),
		ok("-A INPUT -p tcp --dport 22 -j ACCEPT"),
		ok("-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT"),
		ok("-A INPUT -p udp --dport 53 -j ACCEPT"),
		ok("-I INPUT -p tcp --dport 443 -j ACCEPT"),
		ok("-I INPUT 3 -s 10.0.0.0/8 -j ACCEPT"),
		ok("-L --line-numbers"),
		ok("-L -n -v --line-numbers"),
		ok("-nvL"),
		ok("-nvxL INPUT"),
		ok("-vnL INPUT 2 --line-numbers"),
		ok("-L -nv"),
		ok("-vS INPUT"),
		ok("-S INPUT 1"),
		ok("-D INPUT 3"),
		ok("-R INPUT 1 -p tcp --dport 8443 -j ACCEPT"),
		ok("-D INPUT -p udp --dport 53 -j ACCEPT"),
		ok("-P INPUT DROP"),
		ok("-P FORWARD DROP"),
		ok("-P OUTPUT ACCEPT"),
		ok("-N LOGGING"),
		ok("-A INPUT -j LOGGING"),
		ok("-A LOGGING -j LOG --log-prefix \"IPTables-Dropped: \" --log-level 4"),
		ok("-A LOGGING -j DROP"),
		ok("-L LOGGING"),
		ok("-S LOGGING"),
		ok("-N web-in"),
		ok("-E web-in WEB"),
		ok("-A WEB -p tcp --dport 80 -j ACCEPT"),
		ok("-I INPUT 2 -p tcp -j WEB"),
		ok("-F WEB"),
		ok("-D INPUT 2"),
		ok("-X WEB"),
		ok("-t mangle -A PREROUTING -p tcp --dport 22 -j MARK --set-mark 1"),
		ok("-t mangle -A OUTPUT -j MARK --set-xmark 0x10/0xff"),
		ok("-t mangle -I PREROUTING -s 10.1.0.0/16 -j MARK --or-mark 0x4"),
		ok("-t mangle -L -n -v"),
		ok("-t mangle -S"),
		ok("-Z INPUT"),
		ok("-Z"),
		ok("-F"),
		ok("-X"),
		ok("-P INPUT ACCEPT"),
		ok("-P FORWARD ACCEPT"),
	}, ""},
	{"comma lists", []step{
		ok("-A INPUT -s 1.1.1.1,2.2.2.0/24 -j DROP"),
		ok("-A INPUT -s 3.3.3.3,4.4.4.4 -d 5.5.5.5,6.6.6.0/28 -p tcp --dport 25 -j REJECT"),
		ok("-L -n"),
		ok("-C INPUT -s 2.2.2.0/24,1.1.1.1 -j DROP"),
		bad("-C INPUT -s 1.1.1.1,7.7.7.7 -j DROP"),
		bad("-D INPUT -s 1.1.1.1,7.7.7.7 -j DROP"), // one missing: nothing deleted
		ok("-D INPUT -s 2.2.2.0/24,1.1.1.1 -j DROP"),
		ok("-D INPUT -s 4.4.4.4 -d 6.6.6.1/28 -p tcp --dport 25 -j REJECT --reject-with icmp-port-unreachable"),
		ok("-I INPUT -s 8.8.8.8,9.9.9.9 -j ACCEPT"),
		ok("-I INPUT 3 -d 8.8.8.8,9.9.9.9 -j ACCEPT"),
		ok("-I INPUT 1 -d 10.8.8.8,10.9.9.9 -j ACCEPT"),
		ok("-I INPUT 10 -d 11.8.8.8,11.9.9.9 -j ACCEPT"), // at the end
		bad("-I INPUT 13 -d 12.8.8.8,12.9.9.9 -j ACCEPT"),
		ok("-A INPUT -d 10.0.0.1,10.0.0.1"),
		ok("-D INPUT -d 10.0.0.1"),
		bad("-R INPUT 1 -s 1.1.1.1,2.2.2.2 -j DROP"),
		ok("-S"),
	}, ""},
	{"negations", []step{
		ok("-A INPUT ! -s 10.0.0.0/8 ! -d 192.168.0.1 -j DROP"),
		ok("-A INPUT ! -i eth0 ! -p tcp -j ACCEPT"),
		ok("-A FORWARD ! -o ppp+ -i eth+ ! -f -j ACCEPT"),
		ok("-A FORWARD -f -p udp -j DROP"),
		ok("-A INPUT -p tcp ! --dport 22 -j DROP"),
		ok("-A INPUT -p tcp ! --sport 1024:65535 --dport 1:1023 -j DROP"),
		ok("-A INPUT ! -i + -j DROP"),
		ok("-A INPUT -i + -j DROP"),
		ok("-A OUTPUT -p udp ! --dport 53 -j REJECT --reject-with icmp-host-prohibited"),
		ok("-A INPUT -s 10.1.2.3/255.0.255.0 -d 0.0.0.0/8 -j ACCEPT"),
		ok("-A INPUT -s 127.0.0.1 -d 169.254.0.0/16 -j ACCEPT"),
		ok("-L"),
		ok("-L -v"),
		ok("-D INPUT ! -s 10.0.0.0/8 ! -d 192.168.0.1 -j DROP"),
		ok("-C INPUT -p tcp ! --dport 22 -j DROP"),
		bad("-C INPUT -p tcp --dport 22 -j DROP"),
		bad("-A INPUT ! -s 0.0.0.0/0 -j DROP"),
		bad("-A INPUT ! -d 1.2.3.4/0"),
		bad("-A INPUT ! -s 1.1.1.1,2.2.2.2 -j DROP"),
		bad("-A INPUT ! ! -s 1.1.1.1"),
		bad("-A INPUT -s 1.1.1.1 !"),
		bad("-A INPUT ! -j DROP"),
		bad("-A INPUT ! -p all"),
	}, ""},
	{"counters and verbose", []step{
		ok("-A INPUT -s 1.2.3.4 -c 10 2000 -j ACCEPT"),
		ok("-A INPUT -p tcp --dport 80 -c 123456 98765432 -j ACCEPT"),
		ok("-A OUTPUT -c 4000000000 5000000000000"),
		ok("-I INPUT 2 -c 99999 100000 -j DROP"),
		ok("-L -v"),
		ok("-L -v -x"),
		ok("-S -v"),
		ok("-S INPUT 2 -v"),
		ok("-R INPUT 1 -s 1.2.3.5 -j ACCEPT"), // counters start at zero
		ok("-R INPUT 3 -p tcp --dport 81 -c 7 8 -j ACCEPT"),
		ok("-A OUTPUT -d 9.9.9.9 -c 1 1"),
		ok("-A OUTPUT -d 9.9.9.9 -c 2 2"),
		ok("-D OUTPUT -d 9.9.9.9"), // the first equal rule goes
		ok("-t mangle -A POSTROUTING -o eth9 -c 3 4 -j MARK --set-mark 2"),
		ok("-t mangle -P POSTROUTING DROP"),
		ok("-t mangle -Z POSTROUTING 1"),
		ok("-Z INPUT 2"),
		ok("-Z INPUT 9"), // past the end: nothing, no error
		ok("-L INPUT 9"),
		ok("-S INPUT 9"),
		ok("-A INPUT -v -p tcp --dport 22 -s 1.2.3.4,5.6.7.0/24 -j LOG --log-prefix x"),
		ok("-A INPUT -v -p 50 ! -s 1.2.3.4 -i eth0 -f -j DROP"),
		ok("-C INPUT -v -p esp ! -s 1.2.3.4 -i eth0 -f -j DROP"),
		ok("-D INPUT -v -p 50 ! -s 1.2.3.4 -i eth0 -f -j DROP"),
		ok("-F INPUT -v"),
		ok("-N X1"),
		ok("-N X2"),
		ok("-X -v"),
		ok("-F -v"),
		quiet("-Z -v"),
	}, ""},
	{"chains", []step{
		ok("-N A"),
		ok("-N B"),
		ok("-N c-lower"),
		ok("-N mark"), // a match name is a valid chain name
		ok("-A INPUT -j A"),
		ok("-A A -g B"),
		ok("-A B -j c-lower"),
		ok("-A B -j B"), // a loop that no built-in chain reaches is accepted
		ok("-L"),
		ok("-L B"),
		ok("-S B"),
		bad("-A c-lower -j A"), // now it is reached: loop
		bad("-X A"),            // referenced and not empty
		bad("-X c-lower"),      // referenced
		bad("-X"),              // some chain is still in use: none goes
		ok("-E c-lower C"),
		ok("-S"),
		ok("-F B"),
		ok("-X C"),
		ok("-X mark"),
		bad("-E A B"), // exists
		bad("-E NOPE Y"),
		bad("-N A"),
		bad("-N INPUT"),
		bad("-N LOG"),
		bad("-N DNAT"), // a target qtables does not implement still clashes
		bad("-N ACCEPT"),
		bad("-N standard"),
		bad("-N -x"),
		bad("-N aaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		ok("-N aaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		bad("-P A DROP"),
		bad("-P INPUT REJECT"),
		bad("-P INPUT accept"),
		bad("-P NOPE DROP"),
		bad("-X INPUT"),
		bad("-X NOPE"),
		bad("-F NOPE"),
		bad("-Z NOPE"),
		bad("-L NOPE"),
		bad("-S NOPE"),
		ok("-F A"),
		ok("-D INPUT 1"),
		ok("-X"),
		ok("-S"),
	}, ""},
	{"extensions", []step{
		// The -L text of every extension comes from its List method.
		ok("-A INPUT -p icmp --icmp-type echo-request -j ACCEPT"),
		ok("-A INPUT -p icmp --icmp-type 3/1 -j ACCEPT"),
		ok("-A INPUT -p icmp -m icmp ! --icmp-type any -j ACCEPT"),
		ok("-A INPUT -p tcp -m multiport --dports 22,80,443:450 -j ACCEPT"),
		ok("-A INPUT -p udp -m multiport ! --sports 53,123 -j ACCEPT"),
		ok("-A INPUT -p tcp -m multiport --ports 1:2,3 -j ACCEPT"),
		ok("-A INPUT -m iprange --src-range 10.0.0.1-10.0.0.9 ! --dst-range 10.1.0.0-10.2.0.0 -j ACCEPT"),
		ok("-A INPUT -m length --length 100:200 -j ACCEPT"),
		ok("-A INPUT -m length ! --length 64 -j ACCEPT"),
		ok("-A INPUT -m mark --mark 0x5/0xff -j ACCEPT"),
		ok("-A INPUT -m mark ! --mark 7 -j ACCEPT"),
		ok("-A INPUT -m comment --comment \"hello world\" -j ACCEPT"),
		ok("-A INPUT -m comment --comment plain -j ACCEPT"),
		ok("-A INPUT -m pkttype --pkt-type broadcast -j DROP"),
		ok("-A INPUT -m pkttype ! --pkt-type unicast -j DROP"),
		ok("-A INPUT -m ttl --ttl-eq 64 -j DROP"),
		ok("-A INPUT -m ttl --ttl-gt 5 -j DROP"),
		ok("-A INPUT -m ttl ! --ttl-eq 3 -j DROP"),
		ok("-A INPUT -m ttl --ttl-lt 9 -j DROP"),
		ok("-A INPUT -p tcp --syn -j DROP"),
		ok("-A INPUT -p tcp ! --syn -j DROP"),
		ok("-A INPUT -p tcp --tcp-flags SYN,ACK ACK --sport 1:1023 --dport 2000 -j DROP"),
		ok("-A INPUT -p tcp --tcp-option 2 -j DROP"),
		ok("-A INPUT -p tcp ! --tcp-flags ALL NONE -j DROP"),
		ok("-A INPUT -p tcp --tcp-flags ALL ALL -j DROP"),
		ok("-A INPUT -p udp --sport 53 --dport 1024: -j ACCEPT"),
		ok("-A INPUT -p tcp --sport 0:1 -j ACCEPT"),
		ok("-A INPUT -j LOG --log-level debug --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid --log-macdecode"),
		ok("-A INPUT -j LOG --log-level 0 --log-prefix \"a\\\"b'c\\\\d\""),
		ok("-A INPUT -j LOG --log-level alert"),
		ok("-A INPUT -j NFQUEUE --queue-num 3"),
		ok("-A INPUT -j NFQUEUE --queue-balance 0:6 --queue-bypass --queue-cpu-fanout"),
		ok("-A INPUT -j NFQUEUE --queue-bypass"),
		ok("-A INPUT -j NFQUEUE"),
		ok("-A INPUT -j REJECT --reject-with icmp-net-unreachable"),
		ok("-A INPUT -j REJECT --reject-with icmp-host-unreachable"),
		ok("-A INPUT -j REJECT --reject-with icmp-proto-unreachable"),
		ok("-A INPUT -j REJECT --reject-with icmp-net-prohibited"),
		ok("-A INPUT -j REJECT --reject-with icmp-admin-prohibited"),
		ok("-A INPUT -p tcp -j REJECT --reject-with tcp-reset"),
		ok("-A INPUT -j MARK --set-mark 5"),
		ok("-A INPUT -j MARK --set-xmark 0x5/0xf"),
		ok("-A INPUT -j MARK --and-mark 0xf0"),
		ok("-A INPUT -j MARK --xor-mark 0x1"),
		ok("-A INPUT -j MARK --set-mark 0x5/0xff"),
		ok("-A INPUT -j MARK --set-mark 0xffffffff"),
		ok("-L INPUT 30"),
		ok("-S INPUT 30"),
	}, ""},
	{"protocol names", []step{
		ok("-A INPUT -p 47 -j ACCEPT"),
		ok("-A INPUT -p 255 -j ACCEPT"),
		ok("-A INPUT -p 135 -j ACCEPT"),
	}, ""},
	{"chain named CONTINUE", []step{
		bad("-A INPUT -j CONTINUE"), // 1.8.9 (nf_tables) has no CONTINUE target
		ok("-N CONTINUE"),
		ok("-A INPUT -j CONTINUE"),
	}, ""},
	{"options illegal with the command", []step{
		ok("-A INPUT -j DROP"),
		bad("-S -n"),
		bad("-S -x"),
		bad("-S --line-numbers"),
		bad("-A INPUT -n -j DROP"),
		bad("-A INPUT -x -j DROP"),
		bad("-I INPUT --line-numbers -j DROP"),
		bad("-D INPUT -c 1 2 -j DROP"),
		bad("-C INPUT -c 1 2 -j DROP"),
		bad("-F -n"),
		bad("-X -x"),
		bad("-N FOO -n"),
		bad("-Z -n"),
	}, ""},
	{"combined and extra options", []step{
		ok("-P INPUT DROP -c 5 6"), // accepted, and nf_tables ignores the counters
		ok("-L -Z"),
		ok("-Z -L"),
	}, ""},
	{"failures", []step{
		ok("-N FOO"),
		ok("-A INPUT -j FOO"),
		ok("-A FOO -s 1.1.1.1 -j DROP"),
		bad("-D INPUT 5"),
		bad("-D INPUT 0"),
		bad("-R INPUT 5 -j DROP"),
		bad("-R INPUT 0 -j DROP"),
		bad("-I INPUT 3 -j DROP"), // index of insertion too big
		bad("-I INPUT 0 -j DROP"),
		bad("-A NOPE -j DROP"),
		bad("-I NOPE -j DROP"),
		bad("-A INPUT -j NOPE"),
		bad("-A INPUT -g INPUT"),
		bad("-A INPUT -j INPUT"),
		bad("-A INPUT -p tcp --dport 65536 -j DROP"),
		bad("-A INPUT -p tcp --sport 70000 -j DROP"),
		bad("-A INPUT --dport 22 -j DROP"),
		bad("-A INPUT -p tcp --bogus 1 -j DROP"),
		bad("-A INPUT -s 1.2.3.4/33 -j DROP"),
		bad("-A INPUT -s 300.1.1.1 -j DROP"),
		bad("-A INPUT -o eth0 -j DROP"),
		bad("-A OUTPUT -i eth0 -j DROP"),
		bad("-A INPUT -j DROP -j ACCEPT"),
		bad("-A INPUT junk"),
		bad("-A"),
		bad("-A INPUT -p 256"),
		bad("-A INPUT -p foo"),
		bad("-A INPUT -i aaaaaaaaaaaaaaaa"),
		bad("-A INPUT -m nosuchmatch"),
		bad("-A INPUT -j LOG --log-level 9"),
		bad("-A INPUT -j REJECT --reject-with tcp-reset"),
		bad("-t mangle -A FORWARD -j REJECT"),
		bad("-D FOO -s 2.2.2.2 -j DROP"),
		bad("-C FOO -s 2.2.2.2 -j DROP"),
		bad("-L INPUT 1 2"),
		bad("-L INPUT 0"),
		bad("-L -s 1.2.3.4"),
		bad("-Z INPUT 0"),
		bad("-F INPUT -s 1.2.3.4"),
		bad("-t bogus -L"),
		bad("-X FOO"),
		bad("-E FOO INPUT"),
		bad("--bogus"),
		bad("-A INPUT -j \"\""),
		bad("-A INPUT -A OUTPUT"),
		ok("-S"),
	}, ""},
}

// nsPrefix names this test's namespaces (see netns.New).
const nsPrefix = "qt-cmdtest"

// kernelListings are the listings compared after every step.
var kernelListings = [][]string{
	{"-L", "-n", "-v", "-x", "--line-numbers"},
	{"-S", "-v"},
	{"-L"},
	{"-L", "-v"},
	{"-S"},
	{"-t", "mangle", "-L", "-n", "-v", "-x", "--line-numbers"},
	{"-t", "mangle", "-S", "-v"},
}

// TestAgainstKernel runs iptables command sequences in a throwaway network
// namespace and through qtables --file, and after every step compares
// success, the rules (iptables-save against the file) and the listings.
func TestAgainstKernel(t *testing.T) {
	if err := netns.Check(); err != nil {
		skipOrFail(t, err.Error())
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		skipOrFail(t, "iptables is not installed")
	}
	if _, err := netns.CleanStale(nsPrefix); err != nil {
		t.Logf("removing namespaces of earlier runs: %v", err)
	}
	for _, seq := range kernelSequences {
		t.Run(strings.ReplaceAll(seq.name, " ", "_"), func(t *testing.T) {
			var diffs []string
			report := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
			runSequence(t, seq.steps, report)
			switch {
			case seq.knownBug == "":
				for _, d := range diffs {
					t.Error(d)
				}
			case len(diffs) > 0:
				t.Skipf("known bug: %s\n%d difference(s), the first:\n%s", seq.knownBug, len(diffs), diffs[0])
			default:
				t.Errorf("known bug no longer reproduces, remove the marker: %s", seq.knownBug)
			}
		})
	}
}

// runSequence runs steps against a fresh namespace and a fresh rules file,
// reporting every difference; it stops at the first step that differs,
// since later steps would only repeat it.
func runSequence(t *testing.T, steps []step, report func(string, ...any)) {
	ns, err := netns.New(nsPrefix, "ipt")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	file := filepath.Join(t.TempDir(), "rules.v4")
	for i, st := range steps {
		n := 0
		count := func(format string, args ...any) { n++; report(format, args...) }
		label := fmt.Sprintf("step %d %q", i+1, strings.Join(st.args, " "))
		kout, kerr := ns.Exec(nil, "iptables", st.args...)
		before, _ := os.ReadFile(file)
		var qout, qerr bytes.Buffer
		rc := runIptables(append([]string{"--file", file}, st.args...), &qout, &qerr)
		if (kerr == nil) != (rc == 0) {
			count("%s: iptables: %v; qtables: exit %d %s", label, kerr, rc, qerr.String())
		}
		if st.fail && kerr == nil {
			count("%s: iptables accepted a command listed as failing", label)
		}
		if rc != 0 {
			if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
				count("%s: failed command changed the file", label)
			}
		}
		if !st.ignoreStdout && string(kout) != qout.String() {
			count("%s: output differs\n--- iptables\n%s--- qtables\n%s", label, kout, qout.String())
		}
		compareState(t, ns, file, label, count)
		if n > 0 {
			return
		}
	}
}

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("kernel comparison cannot run: %s", why)
	}
	t.Skip(why)
}

// compareState compares the kernel's rules with the file's: the saved
// form and every listing of kernelListings.
func compareState(t *testing.T, ns *netns.Namespace, file, label string, report func(string, ...any)) {
	t.Helper()
	rs, err := engine.LoadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		rs, err = &engine.Ruleset{}, nil
	}
	if err != nil {
		report("%s: the file does not load: %v", label, err)
		return
	}
	saveArgs := []string{}
	if rs.HasCounters() {
		saveArgs = append(saveArgs, "-c")
	}
	ksave, err := ns.Exec(nil, "iptables-save", saveArgs...)
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	fsave, _ := os.ReadFile(file)
	if k, f := tableBlocks(string(ksave)), tableBlocks(string(fsave)); k != f {
		report("%s: rules differ\n--- iptables-save %s\n%s--- file\n%s", label, strings.Join(saveArgs, " "), k, f)
	}
	for _, l := range kernelListings {
		kout, err := ns.Exec(nil, "iptables", l...)
		if err != nil {
			t.Fatalf("%s: iptables %s: %v", label, strings.Join(l, " "), err)
		}
		var qout, qerr bytes.Buffer
		if rc := runIptables(append([]string{"--file", file}, l...), &qout, &qerr); rc != 0 {
			report("%s: qtables %s: exit %d: %s", label, strings.Join(l, " "), rc, qerr.String())
			continue
		}
		if string(kout) != qout.String() {
			report("%s: iptables %s differs\n--- iptables\n%s--- qtables\n%s", label, strings.Join(l, " "), kout, qout.String())
		}
	}
}

// tableBlocks returns the "*table ... COMMIT" blocks of a save file
// without comment lines, sorted by table name: iptables-nft prints tables
// in its own order, a rules file in the order they were added.
func tableBlocks(save string) string {
	var blocks []string
	var cur strings.Builder
	for _, line := range strings.SplitAfter(save, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cur.WriteString(line)
		if line == "COMMIT\n" {
			blocks = append(blocks, cur.String())
			cur.Reset()
		}
	}
	if cur.Len() > 0 {
		blocks = append(blocks, cur.String())
	}
	sort.Strings(blocks)
	return strings.Join(blocks, "")
}

// qt runs qtables --file file args and returns exit status, stdout, stderr.
func qt(file, args string) (int, string, string) {
	var out, errb bytes.Buffer
	rc := runIptables(append([]string{"--file", file}, splitArgs(args)...), &out, &errb)
	return rc, out.String(), errb.String()
}

func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "rules.v4")

	// Listing a file that does not exist shows empty built-in chains and
	// creates nothing.
	rc, out, _ := qt(file, "-S")
	if rc != 0 || out != "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n" {
		t.Errorf("-S on a missing file: %d %q", rc, out)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("listing created the file: %v", err)
	}

	for _, c := range []string{"-N FOO", "-A INPUT -s 192.168.1.146 -j DROP", "-A FOO -p tcp --dport 22 -j ACCEPT", "-I INPUT -j FOO"} {
		if rc, _, errs := qt(file, c); rc != 0 {
			t.Fatalf("%s: exit %d: %s", c, rc, errs)
		}
	}
	want := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:FOO - [0:0]\n" +
		"-A INPUT -j FOO\n-A INPUT -s 192.168.1.146/32 -j DROP\n-A FOO -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n"
	content, _ := os.ReadFile(file)
	if got := tableBlocks(string(content)); got != want {
		t.Errorf("file:\n%s\nwant\n%s", content, want)
	}

	// Failing commands exit non-zero, say why and leave every byte.
	for _, tt := range []struct{ args, msg string }{
		{"-t nat -A POSTROUTING -o eth0 -j MASQUERADE", "NAT rewrites addresses"},
		{"-t nat -L", "NAT rewrites addresses"},
		{"-t raw -A PREROUTING -j DROP", "not supported yet"},
		{"-t security -L", "not supported yet"},
		{"-X FOO", "referenced"},
		{"-D INPUT 7", "too big"},
		{"-A INPUT -p tcp --dport 65536 -j DROP", "65536"},
		{"-E INPUT X", "built-in"},
		{"", "no command"},
	} {
		rc, out, errs := qt(file, tt.args)
		if rc == 0 || out != "" || !strings.Contains(errs, tt.msg) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want failure mentioning %q", tt.args, rc, out, errs, tt.msg)
		}
		if after, _ := os.ReadFile(file); !bytes.Equal(after, content) {
			t.Errorf("%q changed the file", tt.args)
		}
	}
	// -C and listings do not rewrite the file (its header keeps its time).
	for _, c := range []string{"-C INPUT -j FOO", "-L -n", "-S FOO"} {
		if rc, _, errs := qt(file, c); rc != 0 {
			t.Errorf("%s: exit %d: %s", c, rc, errs)
		}
		if after, _ := os.ReadFile(file); !bytes.Equal(after, content) {
			t.Errorf("%q rewrote the file", c)
		}
	}

	// Through a symbolic link the target is rewritten, the link stays.
	link := filepath.Join(dir, "link.v4")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	if rc, _, errs := qt(link, "-P INPUT DROP"); rc != 0 {
		t.Fatalf("via link: exit %d: %s", rc, errs)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v", err)
	}
	if content, _ := os.ReadFile(file); !strings.Contains(string(content), ":INPUT DROP [0:0]") {
		t.Errorf("the link's target was not rewritten:\n%s", content)
	}
}
