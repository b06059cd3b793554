package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qtables/qtables/internal/netns"
)

// ctl runs qtables ctl ARGS in the router (the default control socket of
// the router's namespace) and returns stdout, stderr and the exit status.
func (tp *liveTopo) ctl(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", tp.router.Name(), tp.bin, "ctl"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// mustCtl runs ctl and fails the test unless it succeeds.
func (tp *liveTopo) mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := tp.ctl(t, "", args...)
	if code != 0 {
		t.Fatalf("ctl %q: exit %d: %s", args, code, errs)
	}
	return out
}

// fileCmd runs qtables --file FILE ARGS on a copy of the rules in text.
func fileCmd(t *testing.T, bin, dir, text string, args ...string) (string, string, int) {
	t.Helper()
	f := filepath.Join(dir, "file-mode.v4")
	writeFile(t, f, text)
	cmd := exec.Command(bin, append([]string{"--file", f}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestLiveControl manages the rules of a running daemon through its
// default control socket while traffic decides whether each edit took.
func TestLiveControl(t *testing.T) {
	tp := newLiveTopo(t)
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, liveStatefulRules)
	tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "0")
	sock := filepath.Join("/run/qtables", tp.router.Name()+".sock")
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("default control socket: %v", err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want a socket with 0600", st.Mode())
	}
	// The kernel tracks in the router too, for ct list --kernel.
	tp.ipt(t, "-t", "raw", "-A", "PREROUTING", "-m", "conntrack", "--ctstate", "NEW")

	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Fatalf("TCP to port 80: %v", err)
	}
	expectDropped(t, "TCP to port 81 before -A", tp.dial(81, dropTimeout))

	// -L and -S print what qtables --file prints for the same rules and
	// counters, and what the real iptables prints for them.
	saved := tp.mustCtl(t, "save")
	if !strings.Contains(saved, "-A FORWARD -m connmark --mark 0x7") || !strings.Contains(saved, "[1:") {
		t.Fatalf("save:\n%s", saved)
	}
	for _, args := range [][]string{
		{"-L", "-n", "-v", "-x", "--line-numbers"},
		{"-S"},
		{"-L", "FORWARD", "-n", "-v", "-x"},
		{"-v", "-S", "FORWARD"},
	} {
		got := tp.mustCtl(t, args...)
		want, _, _ := fileCmd(t, tp.bin, tp.dir, saved, args...)
		if got != want {
			t.Errorf("ctl %q:\n%s\nqtables --file:\n%s", args, got, want)
		}
		ref, err := netns.New(liveNSPrefix, "ref")
		if err != nil {
			t.Fatal(err)
		}
		if out, err := ref.Exec([]byte(saved), "iptables-restore", "-c"); err != nil {
			ref.Close()
			t.Fatalf("iptables-restore -c: %v %s", err, out)
		}
		kern, err := ref.Exec(nil, "iptables", args...)
		ref.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got != string(kern) {
			t.Errorf("ctl %q:\n%s\niptables:\n%s", args, got, kern)
		}
	}

	orig := tp.mustCtl(t, "-S")
	// -A takes effect at once; the counters of the other rules survive.
	tp.mustCtl(t, "-A", "FORWARD", "-p", "tcp", "-m", "tcp", "--dport", "81", "-j", "ACCEPT")
	if err := tp.dial(81, acceptTimeout); err != nil {
		t.Fatalf("TCP to port 81 after -A: %v", err)
	}
	after := tp.mustCtl(t, "-v", "-x", "-n", "-L", "FORWARD")
	before, _, _ := fileCmd(t, tp.bin, tp.dir, saved, "-v", "-x", "-n", "-L", "FORWARD")
	if bl := strings.Split(before, "\n"); !strings.Contains(after, strings.TrimSpace(bl[2])) {
		t.Errorf("the first rule's counters changed across -A:\nbefore %s\nafter:\n%s", bl[2], after)
	}
	// A failing command changes nothing and fails as --file fails.
	cur := tp.mustCtl(t, "-S")
	for _, args := range [][]string{
		{"-D", "FORWARD", "99"},
		{"-A", "NOPE", "-j", "ACCEPT"},
		{"-A", "FORWARD", "--bogus"},
		{"-X", "FORWARD"},
		{"-t", "nat", "-A", "FORWARD", "-j", "MASQUERADE"},
	} {
		_, gotErr, gotCode := tp.ctl(t, "", args...)
		_, wantErr, wantCode := fileCmd(t, tp.bin, tp.dir, saved, args...)
		if gotCode != wantCode || gotErr != wantErr || gotCode == 0 {
			t.Errorf("ctl %q: exit %d %q; --file: exit %d %q", args, gotCode, gotErr, wantCode, wantErr)
		}
		if now := tp.mustCtl(t, "-S"); now != cur {
			t.Errorf("failed ctl %q changed the rules:\n%s", args, now)
		}
	}
	// -D, -I, -R, -N, -E, -F, -X, -P, -Z.
	tp.mustCtl(t, "-D", "FORWARD", "-p", "tcp", "-m", "tcp", "--dport", "81", "-j", "ACCEPT")
	expectDropped(t, "TCP to port 81 after -D", tp.dial(81, dropTimeout))
	tp.mustCtl(t, "-N", "WEB")
	tp.mustCtl(t, "-A", "WEB", "-p", "tcp", "-m", "tcp", "--dport", "81", "-j", "ACCEPT")
	tp.mustCtl(t, "-I", "FORWARD", "1", "-p", "tcp", "-j", "WEB")
	if err := tp.dial(81, acceptTimeout); err != nil {
		t.Fatalf("TCP to port 81 through -N/-I: %v", err)
	}
	tp.mustCtl(t, "-R", "WEB", "1", "-p", "tcp", "-m", "tcp", "--dport", "82", "-j", "ACCEPT")
	expectDropped(t, "TCP to port 81 after -R", tp.dial(81, dropTimeout))
	if err := tp.dial(82, acceptTimeout); err != nil {
		t.Fatalf("TCP to port 82 after -R: %v", err)
	}
	tp.mustCtl(t, "-E", "WEB", "WEB2")
	if err := tp.dial(82, acceptTimeout); err != nil {
		t.Fatalf("TCP to port 82 after -E: %v", err)
	}
	tp.mustCtl(t, "-F", "WEB2")
	expectDropped(t, "TCP to port 82 after -F", tp.dial(82, dropTimeout))
	tp.mustCtl(t, "-D", "FORWARD", "1")
	tp.mustCtl(t, "-X", "WEB2")
	tp.mustCtl(t, "-P", "FORWARD", "ACCEPT")
	if err := tp.dial(81, acceptTimeout); err != nil {
		t.Fatalf("TCP to port 81 with policy ACCEPT: %v", err)
	}
	tp.mustCtl(t, "-P", "FORWARD", "DROP")
	tp.mustCtl(t, "-Z")
	if z := tp.mustCtl(t, "-S", "-v"); strings.Contains(z, "-c 1") || strings.Contains(z, "-P FORWARD DROP -c") && !strings.Contains(z, "-P FORWARD DROP -c 0 0") {
		t.Errorf("counters after -Z:\n%s", z)
	}
	if now := tp.mustCtl(t, "-S"); now != orig {
		t.Errorf("rules after the round trip:\n%s\nwant:\n%s", now, orig)
	}

	// ct list: the daemon's flows; --kernel: the kernel's.
	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Fatalf("TCP to port 80: %v", err)
	}
	ct := tp.mustCtl(t, "ct", "list")
	if !strings.Contains(ct, "tcp      6 ") || !strings.Contains(ct, "dport=80") || !strings.Contains(ct, "mark=7") {
		t.Errorf("ct list:\n%s", ct)
	}
	kct := tp.mustCtl(t, "ct", "list", "--kernel")
	if !strings.Contains(kct, "tcp      6 ") || !strings.Contains(kct, "dport=80") {
		t.Errorf("ct list --kernel:\n%s", kct)
	}
	if conntrack, err := exec.LookPath("conntrack"); err == nil {
		kern, err := tp.router.Exec(nil, conntrack, "-L")
		if err == nil {
			// Same flows in the same layout, byte for byte but for the
			// timeouts, which may tick between the two listings.
			if a, b := flowSet(kct, false), flowSet(string(kern), false); !slices.Equal(a, b) {
				t.Errorf("ct list --kernel:\n%s\nconntrack -L:\n%s", kct, kern)
			}
			// The daemon's own table holds the same flows in the same
			// states as the kernel's.
			if a, b := flowSet(ct, true), flowSet(string(kern), true); !slices.Equal(a, b) {
				t.Errorf("ct list:\n%s\nconntrack -L:\n%s", ct, kern)
			}
		}
	}

	// The kernel destroying flows expires them in the daemon's table too
	// (--ct-follow-kernel, on by default).
	if _, err := exec.LookPath("conntrack"); err != nil {
		t.Log("conntrack not installed: kernel destroy events not checked")
	} else if out, err := tp.router.Exec(nil, "conntrack", "-D", "-p", "tcp", "--dport", "80"); err != nil {
		t.Fatalf("conntrack -D: %v %s", err, out)
	} else {
		eventually(t, 5*time.Second, func() error {
			if ct := tp.mustCtl(t, "ct", "list"); strings.Contains(ct, "dport=80 ") {
				return fmt.Errorf("flows the kernel destroyed are still listed:\n%s", ct)
			}
			return nil
		})
		if ct := tp.mustCtl(t, "ct", "list"); !strings.Contains(ct, "dport=81 ") {
			t.Errorf("flows the kernel kept were expired too:\n%s", ct)
		}
	}

	// restore swaps a new set in; reload goes back to the file.
	if _, errs, code := tp.ctl(t, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -p tcp -m multiport --ports 80,81 -j ACCEPT\nCOMMIT\n", "restore"); code != 0 {
		t.Fatalf("restore: %s", errs)
	}
	if err := tp.dial(81, acceptTimeout); err != nil {
		t.Fatalf("TCP to port 81 after restore: %v", err)
	}
	if _, errs, code := tp.ctl(t, "*filter\n-A NOPE -j ACCEPT\nCOMMIT\n", "restore"); code == 0 || !strings.Contains(errs, "NOPE") {
		t.Errorf("restore of a broken file: exit %d %q", code, errs)
	}
	if err := tp.dial(81, acceptTimeout); err != nil {
		t.Fatalf("a failed restore changed the rules: %v", err)
	}
	tp.mustCtl(t, "reload")
	expectDropped(t, "TCP to port 81 after reload", tp.dial(81, dropTimeout))
	if now := tp.mustCtl(t, "-S"); now != orig {
		t.Errorf("rules after reload:\n%s\nwant:\n%s", now, orig)
	}
}

// flowSet returns the sorted lines of a conntrack -L listing without the
// timeout field; with bare, also without counters and marks.
func flowSet(listing string, bare bool) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		f = append(f[:2:2], f[3:]...)
		if bare {
			f = slices.DeleteFunc(f, func(s string) bool {
				return strings.HasPrefix(s, "packets=") || strings.HasPrefix(s, "bytes=") || strings.HasPrefix(s, "mark=")
			})
		}
		out = append(out, strings.Join(f, " "))
	}
	slices.Sort(out)
	return out
}
