package netns

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const testPrefix = "qtn"

// requireNetns skips (or, under CI, fails) when namespaces cannot be made.
func requireNetns(t *testing.T) {
	t.Helper()
	if err := Check(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (CI is set, so this is a failure, not a skip)", err)
		}
		t.Skip(err)
	}
}

func newNS(t *testing.T, role string) *Namespace {
	t.Helper()
	n, err := New(testPrefix, role)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

func exists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

func TestLifecycle(t *testing.T) {
	requireNetns(t)
	n, err := New(testPrefix, "life")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(n.Name(), testPrefix+"-") || !strings.HasSuffix(n.Name(), "-life") {
		t.Errorf("name %q lacks prefix or role", n.Name())
	}
	if !exists(n.Name()) {
		t.Fatalf("%s not in /run/netns after New", n.Name())
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if exists(n.Name()) {
		t.Errorf("%s still exists after Close", n.Name())
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := n.IP("link"); err == nil {
		t.Error("IP after Close succeeded")
	}
}

func TestSysctlIsPerNamespace(t *testing.T) {
	requireNetns(t)
	a, b := newNS(t, "a"), newNS(t, "b")
	if err := a.SetSysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	// Read back through a separate process to be sure the write landed in
	// the namespace and not in the test process's own.
	out, err := a.Exec(nil, "cat", "/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "1" {
		t.Errorf("ip_forward in %s = %q, want 1", a.Name(), got)
	}
	if got, err := b.Sysctl("net.ipv4.ip_forward"); err != nil || got != "0" {
		t.Errorf("ip_forward in fresh %s = %q, %v; want 0", b.Name(), got, err)
	}
	if got, err := a.Sysctl("net.ipv6.conf.all.disable_ipv6"); err == nil && got != "1" {
		t.Errorf("IPv6 not disabled in new namespace: %q", got)
	}
	if err := a.SetSysctl("kernel.hostname", "x"); err == nil {
		t.Error("a global sysctl was accepted")
	}
}

func TestDoRestoresNamespace(t *testing.T) {
	requireNetns(t)
	n := newNS(t, "do")
	own := func() string {
		s, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := own()
	var inside string
	if err := n.Do(func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var want unix.Stat_t
	if err := unix.Stat(n.Path(), &want); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(inside, "["+strconv.FormatUint(want.Ino, 10)+"]") {
		t.Errorf("inside Do the thread is in %s, want inode %d", inside, want.Ino)
	}
	if own() != before {
		t.Errorf("caller's namespace changed")
	}
	wantErr := errors.New("boom")
	if err := n.Do(func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("Do error = %v, want %v", err, wantErr)
	}
}

func TestVethAndPacketSocket(t *testing.T) {
	requireNetns(t)
	a, b := newNS(t, "va"), newNS(t, "vb")
	if err := AddVeth(a, "x0", b, "y0"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		n   *Namespace
		dev string
	}{{a, "x0"}, {b, "y0"}} {
		if err := s.n.LinkUp(s.dev); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddAddr("y0", netip.MustParsePrefix("100.64.9.2/24")); err != nil {
		t.Fatal(err)
	}
	la, err := a.Link("x0")
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Link("y0")
	if err != nil {
		t.Fatal(err)
	}
	if len(la.MAC) != 6 || len(lb.MAC) != 6 || la.Index == 0 {
		t.Fatalf("bad link info %+v %+v", la, lb)
	}
	// The ends exist only in the test namespaces: not in each other's, and
	// not in the root namespace (looked up by MAC, read-only).
	if _, err := a.IP("link", "show", "y0"); err == nil {
		t.Error("peer end y0 visible in the first namespace")
	}
	root, err := exec.Command("ip", "-j", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, mac := range []string{la.MAC.String(), lb.MAC.String()} {
		if strings.Contains(string(root), `"`+mac+`"`) {
			t.Errorf("a link with MAC %s exists in the root namespace", mac)
		}
	}

	pc, err := a.OpenPacket("x0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// A broadcast frame (ARP ethertype, zero body): y0 must receive it.
	frame := append(append(append([]byte{}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), la.MAC...), 0x08, 0x06)
	frame = append(frame, make([]byte, 46)...)
	before := rxPackets(t, b, "y0")
	for range 5 {
		if err := pc.WriteFrame(frame); err != nil {
			t.Fatal(err)
		}
	}
	if got := rxPackets(t, b, "y0") - before; got != 5 {
		t.Errorf("y0 received %d frames, want 5", got)
	}
	if err := pc.Close(); err != nil {
		t.Error(err)
	}
}

func rxPackets(t *testing.T, n *Namespace, dev string) uint64 {
	t.Helper()
	out, err := n.IP("-s", "-j", "link", "show", "dev", dev)
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Stats struct {
			RX struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("parse %s: %v", out, err)
	}
	return links[0].Stats.RX.Packets
}

func TestCleanStale(t *testing.T) {
	requireNetns(t)
	// PIDs above pid_max (at most 2^22) never belong to a live process.
	dead := testPrefix + "-4194999-1-stale"
	if out, err := exec.Command("ip", "netns", "add", dead).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", dead).Run() })
	live := newNS(t, "live")
	deleted, err := CleanStale(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(deleted, dead) || exists(dead) {
		t.Errorf("stale %s not deleted (deleted %v)", dead, deleted)
	}
	if slices.Contains(deleted, live.Name()) || !exists(live.Name()) {
		t.Errorf("namespace %s of this live process was deleted", live.Name())
	}
}
