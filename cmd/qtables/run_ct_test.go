package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qtables/qtables/engine"
)

// liveStatefulRules is a stateful firewall in the router's FORWARD:
// replies of known connections pass, new connections only to the
// server's TCP port 80 and UDP port 5353, everything else is dropped. New
// port-80 connections get connmark 0x7 (CONNMARK), which the first rule
// then reads for their later packets.
const liveStatefulRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m connmark --mark 0x7 -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p tcp -m conntrack --ctstate NEW -m tcp --dport 80 -j CONNMARK --set-xmark 0x7/0xffffffff
-A FORWARD -p tcp -m conntrack --ctstate NEW -m tcp --dport 80 -j ACCEPT
-A FORWARD -p udp -m conntrack --ctstate NEW -m udp --dport 5353 -j ACCEPT
COMMIT
`

// udpAsk sends one datagram from the client and waits for the echo.
func (tp *liveTopo) udpAsk(port uint16, msg string, timeout time.Duration) error {
	return tp.client.Do(func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(serverAddr, port).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if got := string(buf[:n]); got != "echo "+msg {
			return fmt.Errorf("reply %q", got)
		}
		return nil
	})
}

// TestLiveConntrack runs a stateful rule set on live traffic: the
// daemon's own flow table decides NEW and ESTABLISHED.
// With a pool of workers the table is shared: a flow's packets go to one
// worker, its ICMP errors may go to another.
func TestLiveConntrack(t *testing.T) {
	for _, mode := range [][]string{{"--workers", "0"}, {"--workers", "2"}} {
		t.Run(strings.Join(mode, "="), func(t *testing.T) { testLiveConntrack(t, mode...) })
	}
}

func testLiveConntrack(t *testing.T, mode ...string) {
	tp := newLiveTopo(t)
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, liveStatefulRules)
	stats := filepath.Join(tp.dir, "stats.json")
	counters := filepath.Join(tp.dir, "counters.v4")
	d := tp.startDaemon(t, append([]string{"--rules", rules, "--hook", "FORWARD", "--queues", "0",
		"--stats-file", stats, "--counters-file", counters, "--ct-max", "1000"}, mode...)...)
	serveUDPEcho(t, tp.server, serverAddr, 5353)
	// A client listening: the server's attempts to reach it are NEW
	// connections in the wrong direction.
	serveTCPAccept(t, tp.client, clientAddr, 9000)

	// TCP to port 80: the SYN is NEW, every later packet ESTABLISHED.
	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Fatalf("TCP to port 80: %v", err)
	}
	// TCP to port 81: NEW, not allowed.
	expectDropped(t, "TCP to port 81", tp.dial(81, dropTimeout))
	// The server side opening a connection to the client: NEW in reverse.
	err := tp.server.Do(func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(clientAddr, 9000).String(), dropTimeout)
		if err == nil {
			c.Close()
		}
		return err
	})
	expectDropped(t, "TCP from the server to the client", err)
	// UDP: the query is NEW, the reply ESTABLISHED (no rule accepts UDP
	// from port 5353 otherwise).
	for i := range 3 {
		if err := tp.udpAsk(5353, fmt.Sprintf("q%d", i), acceptTimeout); err != nil {
			t.Fatalf("UDP exchange %d: %v", i, err)
		}
	}
	// The server's UDP to the client is NEW and not to port 5353: dropped.
	err = tp.server.Do(func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(clientAddr, 5354).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	st := d.readStats(t, stats)
	if st.Conntrack == nil || st.Conntrack.Entries < 2 {
		t.Fatalf("flow table: %+v, want the TCP and UDP flows", st.Conntrack)
	}
	if st.Conntrack.Max != 1000 {
		t.Errorf("flow table max %d, want --ct-max 1000", st.Conntrack.Max)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v", err)
	}
	rs, err := engine.LoadFile(counters)
	if err != nil {
		t.Fatal(err)
	}
	fw := rs.Table("filter").Chain("FORWARD")
	pk := func(i int) uint64 { p, _ := fw.Rules[i].Counters.Get(); return p }
	// The port-80 conversation: 1 SYN through the NEW rules, the rest
	// (SYN-ACK, ACK, the line, its echo, FINs and ACKs) through the
	// connmark rule; nothing of it through the generic ESTABLISHED rule.
	if pk(2) != 1 || pk(3) != 1 {
		t.Errorf("NEW port-80 rules counted %d and %d packets, want the one SYN", pk(2), pk(3))
	}
	if pk(0) < 5 {
		t.Errorf("the connmark 0x7 rule counted %d packets, want the connection's later packets", pk(0))
	}
	// The UDP exchanges: 3 NEW queries (each its own socket, own port),
	// 3 replies ESTABLISHED.
	if pk(4) != 3 {
		t.Errorf("the NEW UDP rule counted %d packets, want 3", pk(4))
	}
	if pk(1) != 3 {
		t.Errorf("the ESTABLISHED rule counted %d packets, want the 3 UDP replies", pk(1))
	}
	pol, _ := fw.Counters.Get()
	if pol < 3 {
		t.Errorf("the DROP policy counted %d packets, want port 81, the server's TCP and UDP", pol)
	}
	if errors.Is(err, os.ErrNotExist) || strings.Contains(d.stderr.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", d.stderr.String())
	}
}
