package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/internal/kerneltest"
	"github.com/qtables/qtables/internal/netns"
	"github.com/qtables/qtables/queue"
)

// The live tests run `qtables run` for real: a client, a router and a
// server namespace joined by veth pairs, the daemon inside the router
// (under ip netns exec, so every iptables call and the queues are the
// router's), and real TCP connections and pings from the client. Nothing
// touches the root namespace; every namespace is deleted on every exit.

const liveNSPrefix = "qtlive"

var (
	clientAddr = netip.MustParseAddr("10.0.1.2")
	routerIn   = netip.MustParseAddr("10.0.1.1")
	routerOut  = netip.MustParseAddr("10.0.2.1")
	serverAddr = netip.MustParseAddr("10.0.2.2")
)

// liveTopo is client (c0) -- (r0) router (r1) -- (s0) server, with TCP
// echo servers on ports 80, 81 and 82 of the server.
type liveTopo struct {
	client, router, server *netns.Namespace
	clientMAC, r0MAC       net.HardwareAddr
	bin                    string
	dir                    string
}

func newLiveTopo(t *testing.T) *liveTopo {
	t.Helper()
	kerneltest.Require(t, "ip", "iptables", "iptables-save")
	if _, err := netns.CleanStale(liveNSPrefix); err != nil {
		t.Logf("cleaning stale namespaces: %v", err)
	}
	tp := &liveTopo{dir: t.TempDir()}
	tp.bin = buildQtables(t, tp.dir)
	var err error
	for _, p := range []struct {
		ns   **netns.Namespace
		role string
	}{{&tp.client, "client"}, {&tp.router, "router"}, {&tp.server, "server"}} {
		if *p.ns, err = netns.New(liveNSPrefix, p.role); err != nil {
			t.Fatal(err)
		}
		ns := *p.ns
		t.Cleanup(func() { ns.Close() })
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(netns.AddVeth(tp.client, "c0", tp.router, "r0"))
	must(netns.AddVeth(tp.router, "r1", tp.server, "s0"))
	must(tp.client.AddAddr("c0", netip.PrefixFrom(clientAddr, 24)))
	must(tp.router.AddAddr("r0", netip.PrefixFrom(routerIn, 24)))
	must(tp.router.AddAddr("r1", netip.PrefixFrom(routerOut, 24)))
	must(tp.server.AddAddr("s0", netip.PrefixFrom(serverAddr, 24)))
	for _, l := range []struct {
		ns  *netns.Namespace
		dev string
	}{{tp.client, "c0"}, {tp.client, "lo"}, {tp.router, "r0"}, {tp.router, "r1"}, {tp.router, "lo"}, {tp.server, "s0"}, {tp.server, "lo"}} {
		must(l.ns.LinkUp(l.dev))
	}
	must(tp.client.AddRoute(netip.Prefix{}, routerIn, "c0"))
	must(tp.server.AddRoute(netip.Prefix{}, routerOut, "s0"))
	must(tp.router.SetSysctl("net.ipv4.ip_forward", "1"))
	c0, err := tp.client.Link("c0")
	must(err)
	r0, err := tp.router.Link("r0")
	must(err)
	tp.clientMAC, tp.r0MAC = c0.MAC, r0.MAC
	for _, port := range []int{80, 81, 82} {
		tp.serveEcho(t, port, false)
	}
	for _, port := range []int{83, 84} {
		tp.serveEcho(t, port, true)
	}
	return tp
}

// buildQtables builds the command into dir.
func buildQtables(t *testing.T, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "qtables")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// serveEcho listens on the server's port and echoes one line per
// connection, or every line until EOF when many is set.
func (tp *liveTopo) serveEcho(t *testing.T, port int, many bool) {
	t.Helper()
	var ln net.Listener
	err := tp.server.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(serverAddr, uint16(port)).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, "echo "+line); err != nil || !many {
						return
					}
				}
			}()
		}
	}()
}

// serveUDPEcho answers every datagram on addr:port inside ns with "echo "
// and the datagram.
func serveUDPEcho(t *testing.T, ns *netns.Namespace, addr netip.Addr, port uint16) {
	t.Helper()
	var c net.PacketConn
	if err := ns.Do(func() error {
		var err error
		c, err = net.ListenPacket("udp4", netip.AddrPortFrom(addr, port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	}()
}

// serveTCPAccept accepts connections on addr:port inside ns and closes
// them: a dial that reaches it succeeds.
func serveTCPAccept(t *testing.T, ns *netns.Namespace, addr netip.Addr, port uint16) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// dial connects from the client to the server's port, sends a line and
// reads the echo, all within timeout.
func (tp *liveTopo) dial(port int, timeout time.Duration) error {
	return tp.client.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(serverAddr, uint16(port)).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := io.WriteString(c, "hello\n"); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "echo hello\n" {
			return fmt.Errorf("echo %q", line)
		}
		return nil
	})
}

// ping sends one ICMP echo request from the client to dst and waits for
// the reply (a raw socket: no ping binary needed).
func (tp *liveTopo) ping(dst netip.Addr, timeout time.Duration) error {
	return tp.client.Do(func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		id := uint16(os.Getpid())
		seq := uint16(time.Now().UnixNano())
		msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'q', 't'}
		binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return err
			}
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && binary.BigEndian.Uint16(buf[6:]) == seq &&
				from.(*net.IPAddr).IP.Equal(dst.AsSlice()) {
				return nil
			}
		}
	})
}

// converse opens one connection to port and exchanges n lines, each
// echoed before the next is sent.
func (tp *liveTopo) converse(port, n int, timeout time.Duration) error {
	return tp.client.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(serverAddr, uint16(port)).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		r := bufio.NewReader(c)
		for i := 0; i < n; i++ {
			msg := fmt.Sprintf("line %d\n", i)
			if _, err := io.WriteString(c, msg); err != nil {
				return err
			}
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("line %d: %w", i, err)
			}
			if line != "echo "+msg {
				return fmt.Errorf("echo %q for %q", line, msg)
			}
		}
		return nil
	})
}

// metrics fetches the daemon's metrics page from inside the router (the
// connection is made on a thread in the router's namespace).
func (tp *liveTopo) metrics(t *testing.T, addr string) string {
	t.Helper()
	var body []byte
	err := tp.router.Do(func() error {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: qtables\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("metrics: %s", resp.Status)
		}
		body, err = io.ReadAll(resp.Body)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// metricValue reads one sample ("name" or "name{labels}") from a metrics
// page.
func metricValue(t *testing.T, page, sample string) uint64 {
	t.Helper()
	for _, l := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", l, err)
			}
			return uint64(f)
		}
	}
	t.Fatalf("no %s on the metrics page:\n%s", sample, page)
	return 0
}

// ruleCounts returns the packet counter of each rule of a router chain.
func (tp *liveTopo) ruleCounts(t *testing.T, table, chain string) []uint64 {
	t.Helper()
	var out []uint64
	for _, l := range strings.Split(tp.ipt(t, "-t", table, "-v", "-S", chain), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "-A" {
			continue
		}
		i := slices.Index(f, "-c")
		if i < 0 || i+1 >= len(f) {
			t.Fatalf("no counters in %q", l)
		}
		p, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			t.Fatalf("counter in %q: %v", l, err)
		}
		out = append(out, p)
	}
	return out
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ipt runs iptables in the router.
func (tp *liveTopo) ipt(t *testing.T, args ...string) string {
	t.Helper()
	out, err := tp.router.Exec(nil, "iptables", args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// qtablesChains returns every line of the router's filter and mangle
// tables that mentions a qtables chain.
func (tp *liveTopo) qtablesChains(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, table := range []string{"filter", "mangle"} {
		for _, l := range strings.Split(tp.ipt(t, "-t", table, "-S"), "\n") {
			if strings.Contains(l, queue.ChainPrefix) {
				out = append(out, table+": "+l)
			}
		}
	}
	return out
}

// kernelPackets sums the packet counters of a chain's rules.
func (tp *liveTopo) kernelPackets(t *testing.T, table, chain string) uint64 {
	t.Helper()
	var n uint64
	for _, l := range strings.Split(tp.ipt(t, "-t", table, "-v", "-S", chain), "\n") {
		f := strings.Fields(l)
		for i := 0; i+1 < len(f); i++ {
			if f[0] == "-A" && f[i] == "-c" {
				p, err := strconv.ParseUint(f[i+1], 10, 64)
				if err != nil {
					t.Fatalf("counter in %q: %v", l, err)
				}
				n += p
			}
		}
	}
	return n
}

// lineBuf collects a stream and lets a test wait for a substring.
type lineBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lineBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lineBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// liveDaemon is one `qtables run` process in the router.
type liveDaemon struct {
	cmd    *exec.Cmd
	stderr *lineBuf
	stdout *lineBuf
	done   chan struct{}
	err    error
}

// startDaemon runs qtables run in the router with args and waits until it
// reports that its hooks are live.
func (tp *liveTopo) startDaemon(t *testing.T, args ...string) *liveDaemon {
	t.Helper()
	d := tp.spawn(t, args...)
	eventually(t, 20*time.Second, func() error {
		select {
		case <-d.done:
			return errStop{fmt.Errorf("qtables run exited early (%v):\n%s", d.err, d.stderr.String())}
		default:
		}
		if !strings.Contains(d.stderr.String(), `msg="qtables running"`) {
			return errors.New("qtables run has not reported running yet")
		}
		return nil
	})
	return d
}

func (tp *liveTopo) spawn(t *testing.T, args ...string) *liveDaemon {
	t.Helper()
	d := &liveDaemon{stderr: &lineBuf{}, stdout: &lineBuf{}, done: make(chan struct{})}
	d.cmd = exec.Command("ip", append([]string{"netns", "exec", tp.router.Name(), tp.bin, "run"}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("qtables run %v stderr:\n%s", args, d.stderr.String())
		}
	})
	return d
}

// stop sends sig and waits for the exit.
func (d *liveDaemon) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
		return d.err
	case <-time.After(15 * time.Second):
		t.Fatalf("qtables run did not exit within 15s of %v:\n%s", sig, d.stderr.String())
		return nil
	}
}

// readStats has the daemon write its stats file (SIGUSR1) and reads the
// fresh file.
func (d *liveDaemon) readStats(t *testing.T, path string) queue.Stats {
	t.Helper()
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var st queue.Stats
	eventually(t, 5*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		st = queue.Stats{}
		return json.Unmarshal(b, &st)
	})
	return st
}

// errStop ends eventually at once.
type errStop struct{ error }

// eventually polls fn until it returns nil, failing the test with fn's
// last error at the deadline.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 10 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return
		}
		var stop errStop
		if errors.As(err, &stop) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(delay)
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const liveRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p icmp -j DROP
-A FORWARD -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x50/0xffffffff
-A FORWARD -p tcp -m tcp --dport 80 -j ACCEPT
-A FORWARD -p tcp -m tcp --sport 80 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 81 -j LOG --log-prefix "qt-drop81: "
-A FORWARD -p tcp -m tcp --dport 81 -j DROP
-A FORWARD -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A FORWARD -p icmp -m icmp --icmp-type 0 -j ACCEPT
COMMIT
`

// liveReloadRules accepts port 81 in both directions.
const liveReloadRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m multiport --ports 80,81 -j ACCEPT
COMMIT
`

const (
	acceptTimeout = 5 * time.Second
	dropTimeout   = 700 * time.Millisecond
)

func expectDropped(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s got through, want it dropped", what)
	}
	if !isTimeout(err) {
		t.Fatalf("%s: %v, want a timeout (dropped)", what, err)
	}
}

func TestLiveFilter(t *testing.T) {
	tp := newLiveTopo(t)
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, liveRules)
	counters, stats, logFile := filepath.Join(tp.dir, "counters"), filepath.Join(tp.dir, "stats.json"), filepath.Join(tp.dir, "log")
	// A kernel rule after qtables' verdict counts the packets that carry
	// qtables' mark.
	tp.ipt(t, "-t", "mangle", "-A", "POSTROUTING", "-m", "mark", "--mark", "0x50")

	d := tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--hook", "INPUT", "--queues", "0-1", "--workers", "2",
		"--counters-file", counters, "--stats-file", stats, "--log-file", logFile)

	// One daemon per namespace.
	second := tp.spawn(t, "--rules", rules, "--hook", "FORWARD", "--queues", "5")
	select {
	case <-second.done:
		if second.err == nil || !strings.Contains(second.stderr.String(), "another qtables daemon is running") {
			t.Errorf("second daemon: %v\n%s", second.err, second.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a second daemon in the same namespace kept running")
	}

	// The hooks: one jump first in each built-in chain, the NFQUEUE rule
	// balancing over both queues with bypass.
	save := tp.ipt(t, "-S")
	for _, want := range []string{
		"-A INPUT -j QTABLES-INPUT\n", "-A FORWARD -j QTABLES-FORWARD\n",
		"-A QTABLES-FORWARD -j NFQUEUE --queue-balance 0:1 --queue-bypass\n",
		"-A QTABLES-INPUT -j NFQUEUE --queue-balance 0:1 --queue-bypass\n",
	} {
		if strings.Count(save, want) != 1 {
			t.Errorf("router filter table lacks %q once:\n%s", want, save)
		}
	}
	out, err := tp.router.Exec(nil, tp.bin, "hooks", "status")
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); !strings.Contains(s, "daemon: running") || strings.Count(s, "1 FIRST") != 2 {
		t.Errorf("hooks status:\n%s", s)
	}

	// Traffic: port 80 passes (three connections), 81 is dropped, pings
	// through the router pass, pings to the router are dropped at INPUT.
	for i := 0; i < 3; i++ {
		if err := tp.dial(80, acceptTimeout); err != nil {
			t.Fatalf("port 80: %v", err)
		}
	}
	expectDropped(t, "port 81", tp.dial(81, dropTimeout))
	expectDropped(t, "port 82 (FORWARD policy DROP)", tp.dial(82, dropTimeout))
	if err := tp.ping(serverAddr, acceptTimeout); err != nil {
		t.Fatalf("ping through the router: %v", err)
	}
	expectDropped(t, "ping to the router", tp.ping(routerIn, dropTimeout))

	// The LOG line: the kernel's format, with the MAC header of the frame
	// the router received (its own address, the client's, IPv4).
	wantLog := fmt.Sprintf("qt-drop81: IN=r0 OUT=r1 MAC=%s:%s:08:00 SRC=%s DST=%s LEN=60 ", tp.r0MAC, tp.clientMAC, clientAddr, serverAddr)
	eventually(t, 5*time.Second, func() error {
		b, _ := os.ReadFile(logFile)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, wantLog) && strings.Contains(l, " TTL=63 ") && strings.Contains(l, " PROTO=TCP SPT=") &&
				strings.Contains(l, " DPT=81 WINDOW=") && strings.Contains(l, " SYN URGP=0 ") {
				return nil
			}
		}
		return fmt.Errorf("no LOG line starting %q in:\n%s", wantLog, b)
	})

	// qtables' counters against the kernel's: every packet the NFQUEUE
	// rules sent was judged, and every packet qtables marked passed the
	// kernel's mark rule after the verdict.
	var st queue.Stats
	eventually(t, 5*time.Second, func() error {
		st = d.readStats(t, stats)
		queued := tp.kernelPackets(t, "filter", "QTABLES-FORWARD") + tp.kernelPackets(t, "filter", "QTABLES-INPUT")
		if st.Received != queued || st.Accepted+st.Dropped != st.Received {
			return fmt.Errorf("qtables received %d (accepted %d, dropped %d), kernel queued %d", st.Received, st.Accepted, st.Dropped, queued)
		}
		return nil
	})
	// The same numbers on the metrics endpoint, on the router's loopback.
	// Fetching them is INPUT traffic that qtables judges too: the page
	// counts a few more packets than the stats above, and the packets of
	// the fetch in flight when it was made have no verdict yet.
	metrics := tp.metrics(t, "127.0.0.1:9617")
	received := metricValue(t, metrics, "qtables_packets_received_total")
	judged := metricValue(t, metrics, `qtables_verdicts_total{verdict="accept"}`) + metricValue(t, metrics, `qtables_verdicts_total{verdict="drop"}`)
	latencies := metricValue(t, metrics, "qtables_verdict_latency_seconds_count")
	if received < st.Received || received > st.Received+8 || judged > received || judged+4 < received || latencies != judged {
		t.Errorf("metrics: received %d, judged %d, latency samples %d; stats received %d", received, judged, latencies, st.Received)
	}
	if got := metricValue(t, metrics, `qtables_verdicts_total{verdict="drop"}`); got != st.Dropped {
		t.Errorf("metrics: %d drops, stats %d", got, st.Dropped)
	}
	// The per-queue, per-hook series add up to the same drops.
	var hookDrops uint64
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "qtables_packets_total{") && strings.Contains(line, `verdict="drop"`) {
			f := strings.Fields(line)
			n, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			hookDrops += uint64(n)
		}
	}
	if hookDrops != st.Dropped {
		t.Errorf("metrics: qtables_packets_total counts %d drops over queues and hooks, stats %d", hookDrops, st.Dropped)
	}
	if got := metricValue(t, metrics, `qtables_kernel_queue_dropped_total{queue="1",reason="queue_full"}`); got != 0 {
		t.Errorf("metrics: kernel queue 1 dropped %d", got)
	}
	rs, err := engine.LoadFile(counters)
	if err != nil {
		t.Fatal(err)
	}
	fwd, in := rs.Table("filter").Chain("FORWARD"), rs.Table("filter").Chain("INPUT")
	markPkts, _ := fwd.Rules[0].Counters.Get()
	kernelMarked := tp.kernelPackets(t, "mangle", "POSTROUTING")
	if markPkts == 0 || markPkts != kernelMarked || st.Marked != markPkts {
		t.Errorf("qtables MARK rule %d packets, stats marked %d, kernel saw %d marked packets", markPkts, st.Marked, kernelMarked)
	}
	// A dropped SYN to 81 (the kernel retransmits within the dial's
	// deadline, so maybe more), pings in and out.
	for _, c := range []struct {
		name  string
		chain interface{ Get() (uint64, uint64) }
		min   uint64
	}{
		{"FORWARD 81 LOG", &fwd.Rules[3].Counters, 1},
		{"FORWARD 81 DROP", &fwd.Rules[4].Counters, 1},
		{"FORWARD echo request", &fwd.Rules[5].Counters, 1},
		{"FORWARD echo reply", &fwd.Rules[6].Counters, 1},
		{"INPUT icmp DROP", &in.Rules[0].Counters, 1},
		{"FORWARD policy (port 82)", &fwd.Counters, 1},
	} {
		if p, _ := c.chain.Get(); p < c.min {
			t.Errorf("%s: %d packets, want at least %d", c.name, p, c.min)
		}
	}
	if p, _ := fwd.Rules[3].Counters.Get(); st.LogEvents != p || st.LogWritten != p || st.LogDropped != 0 {
		t.Errorf("LOG rule %d packets; stats log_events %d, written %d, dropped %d", p, st.LogEvents, st.LogWritten, st.LogDropped)
	}
	if len(st.Kernel) != 2 || st.Panics != 0 || st.VerdictErrors != 0 {
		t.Errorf("stats %+v", st)
	}

	// SIGHUP reloads: port 81 is accepted by the new rules. A broken file
	// then leaves them in force.
	writeFile(t, rules, liveReloadRules)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(d.stderr.String(), `msg="rules reloaded"`) {
			return errors.New("no reload reported")
		}
		return nil
	})
	if err := tp.dial(81, acceptTimeout); err != nil {
		t.Fatalf("port 81 after reload: %v", err)
	}
	writeFile(t, rules, "*filter\n-A FORWARD -p tcp --dport 99999 -j ACCEPT\nCOMMIT\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(d.stderr.String(), `msg="reload failed; the running rules stay in force"`) {
			return errors.New("no failed reload reported")
		}
		return nil
	})
	if err := tp.dial(81, acceptTimeout); err != nil {
		t.Fatalf("port 81 after a failed reload: %v", err)
	}

	// SIGTERM: a clean exit, the hooks gone, the files written.
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.stderr.String())
	}
	if left := tp.qtablesChains(t); len(left) > 0 {
		t.Errorf("hooks left after SIGTERM: %q", left)
	}
	rs, err = engine.LoadFile(counters)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := rs.Table("filter").Chain("FORWARD").Rules[0].Counters.Get(); p == 0 {
		t.Error("the counters file written on exit has no packets for the reloaded rule")
	}
	// Without the daemon and its hooks the kernel forwards everything.
	if err := tp.dial(82, acceptTimeout); err != nil {
		t.Errorf("port 82 with the daemon stopped: %v", err)
	}
}

// TestLiveKill: kill -9 leaves the hooks behind; with --queue-bypass
// traffic flows unfiltered, and the next start replaces the stale hooks.
func TestLiveKill(t *testing.T) {
	tp := newLiveTopo(t)
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, liveRules)
	d := tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "0")
	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Fatalf("port 80: %v", err)
	}
	expectDropped(t, "port 81", tp.dial(81, dropTimeout))

	if err := d.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("kill -9 reported a clean exit")
	}
	stale := tp.qtablesChains(t)
	if want := []string{"filter: -N QTABLES-FORWARD", "filter: -A FORWARD -j QTABLES-FORWARD",
		"filter: -A QTABLES-FORWARD -j NFQUEUE --queue-num 0 --queue-bypass"}; strings.Join(stale, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after kill -9: %q, want %q", stale, want)
	}
	out, _ := tp.router.Exec(nil, tp.bin, "hooks", "status")
	if s := string(out); !strings.Contains(s, "daemon: not running") || !strings.Contains(s, "QTABLES-FORWARD") {
		t.Errorf("hooks status after kill -9:\n%s", s)
	}
	// No reader, --queue-bypass: the kernel accepts what qtables dropped.
	if err := tp.dial(81, acceptTimeout); err != nil {
		t.Fatalf("port 81 with the daemon dead and --queue-bypass: %v", err)
	}
	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Fatalf("port 80 with the daemon dead: %v", err)
	}

	// The next start (other queues) replaces the stale hook.
	d = tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "2-3")
	if !strings.Contains(d.stderr.String(), "replacing hooks left by an earlier run") {
		t.Errorf("the restart did not report the stale hooks:\n%s", d.stderr.String())
	}
	now := tp.qtablesChains(t)
	if want := []string{"filter: -N QTABLES-FORWARD", "filter: -A FORWARD -j QTABLES-FORWARD",
		"filter: -A QTABLES-FORWARD -j NFQUEUE --queue-balance 2:3 --queue-bypass"}; strings.Join(now, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after restart: %q, want %q", now, want)
	}
	expectDropped(t, "port 81 after restart", tp.dial(81, dropTimeout))
	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Fatalf("port 80 after restart: %v", err)
	}
	if err := d.stop(t, syscall.SIGINT); err != nil {
		t.Fatalf("exit after SIGINT: %v", err)
	}
	if left := tp.qtablesChains(t); len(left) > 0 {
		t.Errorf("hooks left after SIGINT: %q", left)
	}
}

// TestLiveFailClosed: without --queue-bypass a dead daemon blocks the
// hooked traffic until the hooks are removed by hand.
func TestLiveFailClosed(t *testing.T) {
	tp := newLiveTopo(t)
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, liveRules)
	d := tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "0", "--fail-closed")
	if got := tp.ipt(t, "-S", "QTABLES-FORWARD"); !strings.Contains(got, "-A QTABLES-FORWARD -j NFQUEUE --queue-num 0\n") {
		t.Fatalf("fail-closed hook: %s", got)
	}
	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Fatalf("port 80: %v", err)
	}
	d.stop(t, syscall.SIGKILL)
	expectDropped(t, "port 80 with the daemon dead and --fail-closed", tp.dial(80, dropTimeout))

	out, err := tp.router.Exec(nil, tp.bin, "hooks", "remove")
	if err != nil || !strings.Contains(string(out), "removed FORWARD") {
		t.Fatalf("hooks remove: %v %s", err, out)
	}
	if left := tp.qtablesChains(t); len(left) > 0 {
		t.Errorf("hooks left after hooks remove: %q", left)
	}
	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Fatalf("port 80 after hooks remove: %v", err)
	}
	// status with nothing installed: exit status 3.
	_, err = tp.router.Exec(nil, tp.bin, "hooks", "status")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("hooks status with no hooks: %v, want exit status 3", err)
	}
	// install by hand, then status and remove.
	if out, err := tp.router.Exec(nil, tp.bin, "hooks", "install", "--hook", "POSTROUTING", "--queues", "1-2"); err != nil {
		t.Fatalf("hooks install: %v %s", err, out)
	}
	if got := tp.qtablesChains(t); strings.Join(got, "\n") != "mangle: -N QTABLES-POSTROUTING\nmangle: -A POSTROUTING -j QTABLES-POSTROUTING\n"+
		"mangle: -A QTABLES-POSTROUTING -j NFQUEUE --queue-balance 1:2 --queue-bypass" {
		t.Errorf("after hooks install: %q", got)
	}
	// Bypass with no reader: traffic still flows.
	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Fatalf("port 80 with a bypass hook and no daemon: %v", err)
	}
	if out, err := tp.router.Exec(nil, tp.bin, "hooks", "remove", "--hook", "postrouting"); err != nil || !strings.Contains(string(out), "removed POSTROUTING") {
		t.Fatalf("hooks remove --hook postrouting: %v %s", err, out)
	}
	if left := tp.qtablesChains(t); len(left) > 0 {
		t.Errorf("hooks left: %q", left)
	}
}

// TestLiveOffload: the connmark fast path. After the handshake and the
// first data of an accepted TCP flow, the rest of the flow never reaches
// the queue: the kernel's counters and qtables' own show it. A flow whose
// packets the rules log is never offloaded.
func TestLiveOffload(t *testing.T) {
	tp := newLiveTopo(t)
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 84 -j LOG --log-prefix "qt84: "
-A FORWARD -p tcp -m multiport --ports 83,84 -j ACCEPT
COMMIT
`)
	stats := filepath.Join(tp.dir, "stats.json")
	d := tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "0", "--offload-mask", "0x40000000",
		"--offload-after", "4", "--stats-file", stats, "--log-file", filepath.Join(tp.dir, "log"))
	const lines = 20
	if err := tp.converse(83, lines, acceptTimeout); err != nil {
		t.Fatalf("port 83: %v", err)
	}
	readStats := func() queue.Stats { return d.readStats(t, stats) }
	// Rules of QTABLES-FORWARD: connmark accept, CONNMARK save, mark
	// accept, NFQUEUE.
	var c []uint64
	eventually(t, 5*time.Second, func() error {
		c = tp.ruleCounts(t, "filter", "QTABLES-FORWARD")
		if len(c) != 4 {
			return errStop{fmt.Errorf("QTABLES-FORWARD has %d rules:\n%s", len(c), tp.ipt(t, "-S", "QTABLES-FORWARD"))}
		}
		if st := readStats(); st.Received != c[3] {
			return fmt.Errorf("qtables received %d packets, the NFQUEUE rule queued %d", st.Received, c[3])
		}
		return nil
	})
	// SYN, SYN-ACK, ACK, first data: the fourth is handed back with the
	// offload bits (CONNMARK once); every later packet, 19 more lines each
	// way and their ACKs, takes the kernel's path.
	t.Logf("offloaded flow: %d packets queued, %d carried by the kernel's connmark rule", c[3], c[0])
	if c[1] != 1 || c[2] != 1 {
		t.Errorf("CONNMARK rule %d, mark ACCEPT rule %d packets, want 1 and 1", c[1], c[2])
	}
	if c[3] > 6 {
		t.Errorf("%d packets of an offloaded flow were queued, want the first 4 (a few more in flight at most)", c[3])
	}
	if c[0] < 2*(lines-1) {
		t.Errorf("the fast path carried %d packets, want at least %d", c[0], 2*(lines-1))
	}
	if st := readStats(); st.Offloaded != 1 {
		t.Errorf("stats: %d flows offloaded, want 1", st.Offloaded)
	}

	// Port 84 is logged: every packet stays with qtables.
	queuedBefore := c[3]
	if err := tp.converse(84, lines, acceptTimeout); err != nil {
		t.Fatalf("port 84: %v", err)
	}
	st := readStats()
	c = tp.ruleCounts(t, "filter", "QTABLES-FORWARD")
	if st.Offloaded != 1 {
		t.Errorf("a logged flow was offloaded: %d flows offloaded", st.Offloaded)
	}
	if q := c[3] - queuedBefore; q < 2*lines {
		t.Errorf("only %d packets of the logged flow were queued, want at least %d", q, 2*lines)
	}
	if st.LogEvents < lines {
		t.Errorf("%d LOG events for %d client lines", st.LogEvents, lines)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if left := tp.qtablesChains(t); len(left) > 0 {
		t.Errorf("hooks left after SIGTERM: %q", left)
	}
}
