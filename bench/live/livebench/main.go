// Command livebench is `make bench-live`: it measures how many small UDP
// datagrams per second pass through an NFQUEUE consumer, and the latency
// the consumer adds, side by side in one run, in network namespaces it
// creates and deletes:
//
//	sender (10.0.1.2) -- router -- sink (10.0.2.2-9)
//
// The sender floods the sink with 18-byte UDP datagrams (sendmmsg, eight
// destination addresses so that --queue-balance spreads them); the router
// forwards them, its FORWARD hook queueing them to the consumer under
// test; the sink drops them in raw PREROUTING. The rate is what the
// router's mangle POSTROUTING counter saw after the verdicts. Consumers:
//
//   - kernel: no queue at all (the ceiling of this setup);
//   - C: bench/live/nfq_accept.c, libnetfilter_queue, one NF_ACCEPT verdict
//     per packet, one process per queue;
//   - go-nfqueue: a plain loop over github.com/florianl/go-nfqueue (receive,
//     SetVerdict, nothing else), one process for all queues;
//   - qtables run with an accept-all rule set, and with 100 rules that
//     every datagram is compared with (the 100th accepts it).
//
// Each is measured with one queue and with two (--queue-balance 0:1). The
// latency is the round trip of lockstep UDP request/reply pairs through
// the router (both directions queued), p50 and p99, beside the kernel's.
// Rounds alternate the consumers so that a slow moment of a shared
// machine does not hit one of them only; the table gives the median.
//
// Then, with -rules N (default 10000; 0: off), the rule-set comparison of
// issue 7 (rules.go): the same N-rule set (ClassBench acl1_10k, or the
// generator's) in FORWARD for the kernel's iptables-legacy, its
// iptables-nft and qtables behind NFQUEUE, on generated traffic aimed at
// every rule, each measurement in fresh namespaces, with the rates against
// iptables-legacy's in the same round.
//
// `livebench goloop QUEUE...` is the go-nfqueue consumer itself (the
// driver starts it inside the router).
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/internal/netns"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "goloop" {
		if err := goloop(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "goloop:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.StringVar(&o.qtables, "qtables", "bin/qtables", "the qtables binary")
	flag.StringVar(&o.cConsumer, "c", "out/nfq_accept", "the C consumer (bench/live/nfq_accept.c, built)")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "measuring time per consumer and round")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds over all consumers")
	flag.IntVar(&o.pings, "pings", 2000, "request/reply pairs for the latency")
	flag.StringVar(&o.out, "out", "out/bench-live.md", "write the result table here too")
	flag.StringVar(&o.only, "only", "", "comma-separated consumer names to run, of both tables (default all)")
	flag.IntVar(&o.rules, "rules", 10000, "rule-set comparison (kernel iptables-legacy, iptables-nft, qtables) with this many rules; 0: off")
	flag.StringVar(&o.ruleset, "ruleset", "auto", "its rules: a ClassBench file, gen:acl|fw|ipc (the generator), or auto ("+defaultClassBench+" if present, else gen:acl)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-live:", err)
		os.Exit(1)
	}
}

type options struct {
	qtables, cConsumer string
	duration           time.Duration
	rounds, pings      int
	out, only          string
	rules              int
	ruleset            string
}

// consumer is one thing under test.
type consumer struct {
	name   string
	queues int
	// start starts it in the router with the NFQUEUE hook in place and
	// returns a stop function (nil for the kernel alone). It records the
	// consumer's processes in b.pids.
	start func(b *bench) (stop func() error, err error)
}

// result is one measurement.
type result struct {
	pps      float64
	p50, p99 time.Duration
	// cpu is the consumer processes' CPU time (user and system, the
	// kernel's forwarding of accepted packets in their verdict calls
	// included) per packet forwarded; 0 for the kernel alone.
	cpu time.Duration
}

const nsPrefix = "qtbench"

var (
	senderAddr = netip.MustParseAddr("10.0.1.2")
	routerIn   = netip.MustParseAddr("10.0.1.1")
	routerOut  = netip.MustParseAddr("10.0.2.1")
	sinkFirst  = netip.MustParseAddr("10.0.2.2")
)

const (
	sinkAddrs = 8
	floodPort = 9000
	echoPort  = 7
)

type bench struct {
	o                    options
	sender, router, sink *netns.Namespace
	dir                  string
	// pids are the running consumer's processes.
	pids []int
	// reg kills the processes and deletes the namespaces on a signal.
	reg *nsRegistry
}

// cpuTime is the user and system time of the consumer's processes.
func (b *bench) cpuTime() time.Duration {
	var ticks uint64
	for _, pid := range b.pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: state is the
		// 3rd field of the line, utime the 14th, stime the 15th.
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseUint(f[11], 10, 64)
			s, _ := strconv.ParseUint(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func run(o options) error {
	if err := netns.Check(); err != nil {
		return err
	}
	for _, p := range []string{o.qtables, o.cConsumer} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w (make bench-live builds it)", p, err)
		}
	}
	if o.rules > 0 {
		for _, p := range []string{"iptables-legacy-restore", "iptables-legacy-save", "iptables-nft-restore", "iptables-nft-save"} {
			if _, err := exec.LookPath(p); err != nil {
				return fmt.Errorf("-rules needs %s (Debian's iptables package; scripts/deps.sh bench-live installs it)", p)
			}
		}
	}
	if _, err := netns.CleanStale(nsPrefix); err != nil {
		return err
	}
	reg := &nsRegistry{}
	b := &bench{o: o, reg: reg}
	var err error
	if b.dir, err = os.MkdirTemp("", "qtbench"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	// Every exit path deletes the namespaces, a signal included.
	defer reg.closeAll()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		reg.closeAll()
		os.Exit(1)
	}()
	consumers := b.consumers()
	if o.only != "" {
		want := strings.Split(o.only, ",")
		consumers = slices.DeleteFunc(consumers, func(c consumer) bool { return !slices.Contains(want, c.name) })
	}
	var table string
	if len(consumers) > 0 {
		if table, err = b.runBase(consumers, reg); err != nil {
			return err
		}
	}
	if o.rules > 0 {
		rt, err := runRules(o, b.dir, reg)
		if err != nil {
			return err
		}
		if table != "" {
			table += "\n"
		}
		table += rt
	}
	fmt.Print(table)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err == nil {
			os.WriteFile(o.out, []byte(table), 0o644)
		}
	}
	return nil
}

// runBase measures consumers in one set of namespaces and returns the
// table.
func (b *bench) runBase(consumers []consumer, reg *nsRegistry) (string, error) {
	for _, p := range []struct {
		ns   **netns.Namespace
		role string
	}{{&b.sender, "sender"}, {&b.router, "router"}, {&b.sink, "sink"}} {
		n, err := netns.New(nsPrefix, p.role)
		if err != nil {
			return "", err
		}
		reg.add(n)
		defer reg.close(n)
		*p.ns = n
	}
	if err := b.topology(); err != nil {
		return "", err
	}
	stopEcho, err := b.serveEcho()
	if err != nil {
		return "", err
	}
	defer stopEcho()

	results := map[string][]result{}
	key := func(c consumer) string { return c.name + "/" + strconv.Itoa(c.queues) }
	for round := 1; round <= b.o.rounds; round++ {
		for _, c := range consumers {
			r, err := b.measure(c)
			if err != nil {
				return "", fmt.Errorf("%s, %d queue(s): %w", c.name, c.queues, err)
			}
			fmt.Fprintf(os.Stderr, "round %d: %-22s %d queue(s): %9.0f packets/s, consumer CPU %v/packet, RTT p50 %v p99 %v\n",
				round, c.name, c.queues, r.pps, r.cpu, r.p50, r.p99)
			results[key(c)] = append(results[key(c)], r)
		}
	}
	return report(consumers, results, key, b.o), nil
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// joinVeths joins sender -- router -- sink by veth pairs (s0-r0, r1-k0)
// and gives the sender's and the router's ends their addresses; it panics
// (must) on failure, as the topology functions expect.
func joinVeths(sender, router, sink *netns.Namespace) {
	must(netns.AddVeth(sender, "s0", router, "r0"))
	must(netns.AddVeth(router, "r1", sink, "k0"))
	must(sender.AddAddr("s0", netip.PrefixFrom(senderAddr, 24)))
	must(router.AddAddr("r0", netip.PrefixFrom(routerIn, 24)))
	must(router.AddAddr("r1", netip.PrefixFrom(routerOut, 24)))
}

// topology builds sender -- router -- sink.
func (b *bench) topology() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("topology: %v", p)
		}
	}()
	joinVeths(b.sender, b.router, b.sink)
	a := sinkFirst
	for i := 0; i < sinkAddrs; i++ {
		must(b.sink.AddAddr("k0", netip.PrefixFrom(a, 24)))
		a = a.Next()
	}
	for _, l := range []struct {
		ns  *netns.Namespace
		dev string
	}{{b.sender, "s0"}, {b.sender, "lo"}, {b.router, "r0"}, {b.router, "r1"}, {b.router, "lo"}, {b.sink, "k0"}, {b.sink, "lo"}} {
		must(l.ns.LinkUp(l.dev))
	}
	must(b.sender.AddRoute(netip.Prefix{}, routerIn, "s0"))
	must(b.sink.AddRoute(netip.Prefix{}, routerOut, "k0"))
	must(b.router.SetSysctl("net.ipv4.ip_forward", "1"))
	// The sink drops the flood before any socket lookup (no ICMP port
	// unreachable); the router counts what leaves it.
	if out, err := b.sink.Exec(nil, "iptables", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "--dport", strconv.Itoa(floodPort), "-j", "DROP"); err != nil {
		return fmt.Errorf("%v %s", err, out)
	}
	if out, err := b.router.Exec(nil, "iptables", "-t", "mangle", "-A", "POSTROUTING", "-p", "udp", "--dport", strconv.Itoa(floodPort)); err != nil {
		return fmt.Errorf("%v %s", err, out)
	}
	// Resolve the neighbours before measuring.
	for i := 0; i < 3; i++ {
		b.rtt(5)
	}
	return nil
}

// forwarded reads the router's count of flood datagrams sent on.
func (b *bench) forwarded() (uint64, error) {
	out, err := b.router.Exec(nil, "iptables", "-t", "mangle", "-v", "-S", "POSTROUTING")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, " -c "); i >= 0 && strings.Contains(l, "--dport "+strconv.Itoa(floodPort)) {
			var p, by uint64
			if _, err := fmt.Sscanf(l[i:], " -c %d %d", &p, &by); err != nil {
				return 0, err
			}
			return p, nil
		}
	}
	return 0, fmt.Errorf("no counter in %q", out)
}

// measure runs one consumer: the flood's rate, then the latency.
func (b *bench) measure(c consumer) (result, error) {
	b.pids = nil
	stop, err := c.start(b)
	if err != nil {
		return result{}, err
	}
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	var sent atomic.Uint64
	quit := make(chan struct{})
	floodDone := make(chan error, 1)
	go func() { floodDone <- b.flood(quit, &sent) }()
	time.Sleep(500 * time.Millisecond) // warm up
	c0, err := b.forwarded()
	if err != nil {
		close(quit)
		<-floodDone
		return result{}, err
	}
	t0, cpu0 := time.Now(), b.cpuTime()
	time.Sleep(b.o.duration)
	c1, err := b.forwarded()
	t1, cpu1 := time.Now(), b.cpuTime()
	close(quit)
	if ferr := <-floodDone; ferr != nil {
		return result{}, ferr
	}
	if err != nil {
		return result{}, err
	}
	time.Sleep(200 * time.Millisecond) // let the queue drain
	rtts, err := b.rtt(b.o.pings)
	if err != nil {
		return result{}, err
	}
	r := result{pps: float64(c1-c0) / t1.Sub(t0).Seconds(), p50: percentile(rtts, 50), p99: percentile(rtts, 99)}
	if c1 > c0 {
		r.cpu = (cpu1 - cpu0) / time.Duration(c1-c0)
	}
	if stop != nil {
		s := stop
		stop = nil
		if err := s(); err != nil {
			return r, err
		}
	}
	return r, nil
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// mmsghdr is struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// flood sends 18-byte datagrams to the sink addresses as fast as sendmmsg
// goes until quit is closed.
func (b *bench) flood(quit <-chan struct{}, sent *atomic.Uint64) error {
	fd, err := b.sender.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	const batch = 64
	payload := []byte("qtables bench-live")
	addrs := make([]unix.RawSockaddrInet4, sinkAddrs)
	a := sinkFirst
	for i := range addrs {
		addrs[i] = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		binary16(&addrs[i].Port, floodPort)
		a = a.Next()
	}
	iov := unix.Iovec{Base: &payload[0]}
	iov.SetLen(len(payload))
	msgs := make([]mmsghdr, batch)
	for i := range msgs {
		msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&addrs[i%sinkAddrs]))
		msgs[i].hdr.Namelen = unix.SizeofSockaddrInet4
		msgs[i].hdr.Iov = &iov
		msgs[i].hdr.SetIovlen(1)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		select {
		case <-quit:
			runtime.KeepAlive(addrs)
			runtime.KeepAlive(payload)
			return nil
		default:
		}
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), batch, 0, 0, 0)
		if errno != 0 && errno != unix.EINTR && errno != unix.ENOBUFS && errno != unix.EAGAIN {
			return fmt.Errorf("sendmmsg: %w", errno)
		}
		if errno == 0 {
			sent.Add(uint64(n))
		}
	}
}

// binary16 stores a port in network order.
func binary16(p *uint16, v uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(v>>8), byte(v)
}

// serveEcho answers UDP requests on the first sink address's echo port.
func (b *bench) serveEcho() (func(), error) {
	var c net.PacketConn
	if err := b.sink.Do(func() error {
		var err error
		c, err = net.ListenPacket("udp4", netip.AddrPortFrom(sinkFirst, echoPort).String())
		return err
	}); err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	return func() { c.Close() }, nil
}

// rtt measures n lockstep request/reply round trips from the sender to
// the sink's echo.
func (b *bench) rtt(n int) ([]time.Duration, error) {
	var out []time.Duration
	err := b.sender.Do(func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(sinkFirst, echoPort).String())
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 64)
		msg := []byte("qtables rtt 0000000")
		for i := 0; i < n+n/10; i++ {
			copy(msg[12:], fmt.Sprintf("%07d", i))
			start := time.Now()
			if _, err := c.Write(msg); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				m, err := c.Read(buf)
				if err != nil {
					return fmt.Errorf("echo %d: %w", i, err)
				}
				if bytes.Equal(buf[:m], msg) {
					break
				}
			}
			if i >= n/10 { // the first tenth warms up
				out = append(out, time.Since(start))
			}
		}
		return nil
	})
	return out, err
}

// queueRule is the router's NFQUEUE rule for the consumers that do not
// install their own (C, go-nfqueue): no bypass, as qtables' --fail-closed.
func queueRule(queues int) []string {
	if queues == 1 {
		return []string{"-j", "NFQUEUE", "--queue-num", "0"}
	}
	return []string{"-j", "NFQUEUE", "--queue-balance", "0:" + strconv.Itoa(queues-1)}
}

func (b *bench) ipt(args ...string) error {
	out, err := b.router.Exec(nil, "iptables", args...)
	if err != nil {
		return fmt.Errorf("iptables %v: %v %s", args, err, out)
	}
	return nil
}

// proc is a consumer process in the router.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuf
	done   chan error
	reg    *nsRegistry
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// spawn starts prog in the router and waits until its stderr shows ready.
func (b *bench) spawn(ready string, prog string, args ...string) (*proc, error) {
	p := &proc{stderr: &syncBuf{}, done: make(chan error, 1)}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", b.router.Name(), prog}, args...)...)
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	b.reg.addProc(p.cmd.Process)
	p.reg = b.reg
	go func() {
		err := p.cmd.Wait()
		b.reg.removeProc(p.cmd.Process)
		p.done <- err
	}()
	b.pids = append(b.pids, p.cmd.Process.Pid) // ip netns exec execs the program
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.stderr.String(), ready) {
		select {
		case err := <-p.done:
			return nil, fmt.Errorf("%s exited early (%v): %s", prog, err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			p.cmd.Process.Kill()
			return nil, fmt.Errorf("%s did not get ready: %s", prog, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, nil
}

func (p *proc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("did not stop on SIGTERM: %s", p.stderr.String())
	}
}

const acceptAllRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -j ACCEPT
COMMIT
`

// rules100 has 99 rules no datagram of the bench matches, of three
// shapes (a source prefix, a UDP port, a TCP port), and an accepting
// 100th: every datagram is compared with all 100.
func rules100() string {
	var s strings.Builder
	s.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for i := 0; i < 99; i++ {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&s, "-A FORWARD -s 192.168.%d.0/24 -j DROP\n", i)
		case 1:
			fmt.Fprintf(&s, "-A FORWARD -p udp -m udp --dport %d -j DROP\n", 10000+i)
		case 2:
			fmt.Fprintf(&s, "-A FORWARD -d 10.0.2.0/24 -p tcp -m tcp --dport %d -j DROP\n", 20000+i)
		}
	}
	s.WriteString("-A FORWARD -p udp -j ACCEPT\nCOMMIT\n")
	return s.String()
}

func (b *bench) consumers() []consumer {
	self, _ := os.Executable()
	withRule := func(queues int, start func() ([]*proc, error)) func(*bench) (func() error, error) {
		return func(b *bench) (func() error, error) {
			ps, err := start()
			if err != nil {
				return nil, err
			}
			if err := b.ipt(append([]string{"-A", "FORWARD"}, queueRule(queues)...)...); err != nil {
				for _, p := range ps {
					p.stop()
				}
				return nil, err
			}
			return func() error {
				err := b.ipt("-F", "FORWARD")
				for _, p := range ps {
					err = errors.Join(err, p.stop())
				}
				return err
			}, nil
		}
	}
	cConsumer := func(queues int) consumer {
		return consumer{name: "C libnetfilter_queue", queues: queues, start: withRule(queues, func() ([]*proc, error) {
			var ps []*proc
			for q := 0; q < queues; q++ {
				p, err := b.spawn("bound", b.o.cConsumer, strconv.Itoa(q))
				if err != nil {
					for _, p := range ps {
						p.stop()
					}
					return nil, err
				}
				ps = append(ps, p)
			}
			return ps, nil
		})}
	}
	goConsumer := func(queues int) consumer {
		return consumer{name: "go-nfqueue loop", queues: queues, start: withRule(queues, func() ([]*proc, error) {
			args := []string{"goloop"}
			for q := 0; q < queues; q++ {
				args = append(args, strconv.Itoa(q))
			}
			p, err := b.spawn("bound", self, args...)
			if err != nil {
				return nil, err
			}
			return []*proc{p}, nil
		})}
	}
	qt := func(name, rules string, queues int) consumer {
		return consumer{name: name, queues: queues, start: func(b *bench) (func() error, error) {
			path := filepath.Join(b.dir, strings.ReplaceAll(name, " ", "_")+".rules")
			if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
				return nil, err
			}
			qs := "0"
			if queues > 1 {
				qs = "0-" + strconv.Itoa(queues-1)
			}
			p, err := b.spawn(`msg="qtables running"`, b.o.qtables, "run", "--rules", path, "--hook", "FORWARD",
				"--queues", qs, "--fail-closed", "--metrics-addr", "", "--log-to", "stdout")
			if err != nil {
				return nil, err
			}
			return p.stop, nil
		}}
	}
	var cs []consumer
	cs = append(cs, consumer{name: "kernel (no queue)", queues: 0, start: func(*bench) (func() error, error) { return nil, nil }})
	for _, q := range []int{1, 2} {
		cs = append(cs, cConsumer(q), goConsumer(q),
			qt("qtables accept-all", acceptAllRules, q), qt("qtables 100 rules", rules100(), q))
	}
	return cs
}

// report formats the medians.
func report(cs []consumer, res map[string][]result, key func(consumer) string, o options) string {
	median := func(rs []result) result {
		p := make([]float64, len(rs))
		var p50, p99, cpu []time.Duration
		for i, r := range rs {
			p[i] = r.pps
			p50, p99, cpu = append(p50, r.p50), append(p99, r.p99), append(cpu, r.cpu)
		}
		slices.Sort(p)
		return result{pps: p[len(p)/2], p50: percentile(p50, 50), p99: percentile(p99, 50), cpu: percentile(cpu, 50)}
	}
	// The rate against C's in the same round (measured minutes apart at
	// most), median over rounds: steadier than a ratio of medians on a
	// shared machine.
	cRounds := map[int][]result{}
	for _, c := range cs {
		if c.name == "C libnetfilter_queue" {
			cRounds[c.queues] = res[key(c)]
		}
	}
	roundRatio := func(c consumer) string {
		cr, rs := cRounds[c.queues], res[key(c)]
		var ratios []float64
		for i := range rs {
			if i < len(cr) && cr[i].pps > 0 {
				ratios = append(ratios, rs[i].pps/cr[i].pps)
			}
		}
		if len(ratios) == 0 || c.queues == 0 {
			return "-"
		}
		slices.Sort(ratios)
		return fmt.Sprintf("%.0f%% (%.0f-%.0f%%)", 100*ratios[len(ratios)/2], 100*ratios[0], 100*ratios[len(ratios)-1])
	}
	var kernelRTT time.Duration
	for _, c := range cs {
		m := median(res[key(c)])
		if c.queues == 0 {
			kernelRTT = m.p50
		}
	}
	var s strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&s, "bench-live: %d CPUs (%s), %s per measurement, median of %d rounds, 18-byte UDP datagrams, RTT of %d request/reply pairs\n\n",
		runtime.NumCPU(), host, o.duration, o.rounds, o.pings)
	s.WriteString("| consumer | queues | packets/s, median (min-max) | vs C in the same round, median (min-max) | consumer CPU per packet | RTT p50 | RTT p99 | added p50 vs kernel |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range cs {
		rs := res[key(c)]
		if len(rs) == 0 {
			continue
		}
		m := median(rs)
		lo, hi := rs[0].pps, rs[0].pps
		for _, r := range rs {
			lo, hi = min(lo, r.pps), max(hi, r.pps)
		}
		q, cpu := strconv.Itoa(c.queues), m.cpu.Round(10*time.Nanosecond).String()
		if c.queues == 0 {
			q, cpu = "-", "-"
		}
		fmt.Fprintf(&s, "| %s | %s | %.0f (%.0f-%.0f) | %s | %s | %v | %v | %v |\n", c.name, q, m.pps, lo, hi, roundRatio(c), cpu,
			m.p50.Round(time.Microsecond), m.p99.Round(time.Microsecond), (m.p50 - kernelRTT).Round(time.Microsecond))
	}
	return s.String()
}

// goloop is the plain go-nfqueue consumer: receive, SetVerdict(ACCEPT),
// nothing else, one reader per queue.
func goloop(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var count atomic.Uint64
	for _, a := range args {
		q, err := strconv.Atoi(a)
		if err != nil {
			return err
		}
		nf, err := nfqueue.Open(&nfqueue.Config{NfQueue: uint16(q), MaxPacketLen: 0xffff, MaxQueueLen: 1024,
			Copymode: nfqueue.NfQnlCopyPacket, AfFamily: unix.AF_INET})
		if err != nil {
			return fmt.Errorf("queue %d: %w", q, err)
		}
		defer nf.Close()
		nf.Con.SetReadBuffer(4 << 20)
		fn := func(a nfqueue.Attribute) int {
			count.Add(1)
			nf.SetVerdict(*a.PacketID, nfqueue.NfAccept)
			return 0
		}
		if err := nf.RegisterWithErrorFunc(ctx, fn, func(error) int { return 0 }); err != nil {
			return fmt.Errorf("queue %d: %w", q, err)
		}
	}
	fmt.Fprintln(os.Stderr, "goloop: bound")
	<-ctx.Done()
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "packets %d\n", count.Load())
	return w.Flush()
}
