package main

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/internal/netns"
)

// serviceAddr is an address on the server's loopback, reachable from the
// router over either server link.
var serviceAddr = netip.MustParseAddr("10.0.9.1")

// addSecondPath gives the server a second link to the router (r2 -- s1,
// 10.0.3.0/24) and routes serviceAddr through the first in the router's
// main table and through the second in table 100, selected by fwmark 0x50.
func (tp *liveTopo) addSecondPath(t *testing.T) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(netns.AddVeth(tp.router, "r2", tp.server, "s1"))
	must(tp.router.AddAddr("r2", netip.MustParsePrefix("10.0.3.1/24")))
	must(tp.server.AddAddr("s1", netip.MustParsePrefix("10.0.3.2/24")))
	must(tp.server.AddAddr("lo", netip.PrefixFrom(serviceAddr, 32)))
	must(tp.router.LinkUp("r2"))
	must(tp.server.LinkUp("s1"))
	// The server answers over its default route (s0) whatever link a
	// request came in on: no reverse-path filtering on either side.
	for _, ns := range []struct {
		set func(string, string) error
		dev string
	}{{tp.server.SetSysctl, "all"}, {tp.server.SetSysctl, "s1"}, {tp.server.SetSysctl, "s0"},
		{tp.router.SetSysctl, "all"}, {tp.router.SetSysctl, "r1"}, {tp.router.SetSysctl, "r2"}} {
		must(ns.set("net.ipv4.conf."+ns.dev+".rp_filter", "0"))
	}
	must(tp.router.AddRoute(netip.PrefixFrom(serviceAddr, 32), serverAddr, "r1"))
	for _, args := range [][]string{
		{"route", "add", serviceAddr.String() + "/32", "via", "10.0.3.2", "dev", "r2", "table", "100"},
		{"rule", "add", "fwmark", "0x50", "table", "100"},
	} {
		if out, err := tp.router.IP(args...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
}

// serveUDPWhere answers every datagram to serviceAddr:port with the name of
// the server interface it arrived on (IP_PKTINFO).
func serveUDPWhere(t *testing.T, tp *liveTopo, port uint16) {
	t.Helper()
	fd, err := tp.server.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port), Addr: serviceAddr.As4()}); err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, dev := range []string{"s0", "s1", "lo"} {
		l, err := tp.server.Link(dev)
		if err != nil {
			t.Fatal(err)
		}
		names[l.Index] = dev
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		unix.Shutdown(fd, unix.SHUT_RDWR)
		<-done
		unix.Close(fd)
	})
	go func() {
		defer close(done)
		buf, oob := make([]byte, 1500), make([]byte, 256)
		for {
			_, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
			if err != nil {
				return
			}
			if from == nil {
				return // shut down
			}
			dev := "?"
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= int(unsafe.Sizeof(unix.Inet4Pktinfo{})) {
					info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
					dev = names[int(info.Ifindex)]
				}
			}
			unix.Sendto(fd, []byte(dev), 0, from)
		}
	}()
}

// udpArrival asks the server which of its links a datagram to
// serviceAddr:port came in on.
func (tp *liveTopo) udpArrival(port uint16) (string, error) {
	var dev string
	err := tp.client.Do(func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(serviceAddr, port).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("where?")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		dev = string(buf[:n])
		return err
	})
	return dev, err
}

// TestLivePolicyRouting: a MARK rule in qtables' mangle PREROUTING sets the
// mark in the verdict, and the router's policy routing (ip rule fwmark)
// sends the marked traffic over the second server link. Without qtables,
// and for unmarked traffic, the main table's first link carries it.
func TestLivePolicyRouting(t *testing.T) {
	tp := newLiveTopo(t)
	tp.addSecondPath(t)
	serveUDPWhere(t, tp, 90)
	serveUDPWhere(t, tp, 91)
	serveTCPAccept(t, tp.server, serviceAddr, 90)
	// The server counts TCP SYNs to port 90 per link.
	for _, dev := range []string{"s0", "s1"} {
		if out, err := tp.server.Exec(nil, "iptables", "-A", "INPUT", "-i", dev, "-p", "tcp", "--dport", "90", "--syn"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	synsOn := func(dev string) uint64 {
		out, err := tp.server.Exec(nil, "iptables", "-v", "-S", "INPUT")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			var p, b uint64
			if strings.Contains(l, "-i "+dev+" ") {
				if i := strings.Index(l, " -c "); i >= 0 {
					fmt.Sscanf(l[i:], " -c %d %d", &p, &b)
					return p
				}
			}
		}
		t.Fatalf("no counter for %s", dev)
		return 0
	}
	arrival := func(port uint16) string {
		t.Helper()
		dev, err := tp.udpArrival(port)
		if err != nil {
			t.Fatalf("udp to port %d: %v", port, err)
		}
		return dev
	}
	if got := arrival(90); got != "s0" {
		t.Fatalf("without qtables port 90 arrived on %s, want s0 (the main table)", got)
	}

	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, `*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p udp -m udp --dport 90 -j MARK --set-xmark 0x50/0xffffffff
-A PREROUTING -p tcp -m tcp --dport 90 -j MARK --set-xmark 0x50/0xffffffff
COMMIT
`)
	stats := filepath.Join(tp.dir, "stats.json")
	d := tp.startDaemon(t, "--rules", rules, "--hook", "PREROUTING", "--queues", "0", "--stats-file", stats)
	for i := 0; i < 3; i++ {
		if got := arrival(90); got != "s1" {
			t.Errorf("marked datagram %d arrived on %s, want s1 (table 100 by fwmark 0x50)", i, got)
		}
		if got := arrival(91); got != "s0" {
			t.Errorf("unmarked datagram %d arrived on %s, want s0", i, got)
		}
	}
	s0, s1 := synsOn("s0"), synsOn("s1")
	if _, err := tp.dialErr(serviceAddr, 90, acceptTimeout); err != nil {
		t.Fatalf("tcp to port 90: %v", err)
	}
	if d0, d1 := synsOn("s0")-s0, synsOn("s1")-s1; d0 != 0 || d1 != 1 {
		t.Errorf("the marked SYN: %d on s0, %d on s1, want it on s1", d0, d1)
	}
	st := d.readStats(t, stats)
	if st.Marked < 4 {
		t.Errorf("%d verdicts carried a mark, want at least 4", st.Marked)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if got := arrival(90); got != "s0" {
		t.Errorf("after qtables stopped port 90 arrived on %s, want s0", got)
	}
}
