package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qtables/qtables/engine"
)

const (
	reloadRulesA = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 86 -j ACCEPT
-A FORWARD -p udp -m udp --sport 86 -j ACCEPT
-A FORWARD -p icmp -j ACCEPT
COMMIT
`
	// reloadRulesB accepts the same traffic with one more rule in front.
	reloadRulesB = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 9 -j DROP
-A FORWARD -p udp -m udp --dport 86 -j ACCEPT
-A FORWARD -p udp -m udp --sport 86 -j ACCEPT
-A FORWARD -p icmp -j ACCEPT
COMMIT
`
)

// udpLockstep sends numbered datagrams to the server's echo on port 86, one
// at a time, each waiting for its echo, until stop is closed. It returns
// how many were sent and the numbers that were never answered.
func (tp *liveTopo) udpLockstep(stop <-chan struct{}) (sent int, lost []int, err error) {
	err = tp.client.Do(func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(serverAddr, 86).String())
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 64)
		msg := make([]byte, 8)
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				return nil
			default:
			}
			binary.BigEndian.PutUint64(msg, uint64(seq))
			if _, err := c.Write(msg); err != nil {
				return err
			}
			sent++
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			for {
				n, err := c.Read(buf)
				if err != nil {
					lost = append(lost, seq)
					break
				}
				if n == 5+8 && binary.BigEndian.Uint64(buf[5:]) == uint64(seq) {
					break
				}
			}
		}
	})
	return sent, lost, err
}

// TestLiveReloadUnderTraffic: SIGHUP reloads, many of them, while UDP
// exchanges and pings run through the router: every packet is answered,
// and the rules that are in both files keep counting across the reloads
// (their counters equal the packets that were sent).
func TestLiveReloadUnderTraffic(t *testing.T) {
	tp := newLiveTopo(t)
	serveUDPEcho(t, tp.server, serverAddr, 86)
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, reloadRulesA)
	counters, stats := filepath.Join(tp.dir, "counters"), filepath.Join(tp.dir, "stats.json")
	d := tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "0-1", "--workers", "2",
		"--counters-file", counters, "--stats-file", stats)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var udpSent int
	var udpLost []int
	var udpErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		udpSent, udpLost, udpErr = tp.udpLockstep(stop)
	}()
	var pings, pingLost int
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			pings++
			if err := tp.ping(serverAddr, 2*time.Second); err != nil {
				pingLost++
			}
		}
	}()

	const reloads = 20
	files := []string{reloadRulesA, reloadRulesB} // B first, A last
	for i := 1; i <= reloads; i++ {
		writeFile(t, rules, files[i%2])
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() error {
			if n := strings.Count(d.stderr.String(), `msg="rules reloaded"`); n < i {
				return fmt.Errorf("%d reloads reported, want %d", n, i)
			}
			return nil
		})
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if udpErr != nil {
		t.Fatal(udpErr)
	}
	t.Logf("%d reloads under %d UDP exchanges and %d pings", reloads, udpSent, pings)
	if len(udpLost) > 0 || pingLost > 0 || udpSent < 100 || pings < 10 {
		t.Errorf("lost %d of %d UDP exchanges (%v) and %d of %d pings", len(udpLost), udpSent, udpLost, pingLost, pings)
	}
	// The last file was A: rule 1 counted every request, rule 2 every
	// echo, rule 3 every echo request and reply, across all reloads.
	st := d.readStats(t, stats)
	rs, err := engine.LoadFile(counters)
	if err != nil {
		t.Fatal(err)
	}
	fwd := rs.Table("filter").Chain("FORWARD")
	got := func(i int) uint64 { p, _ := fwd.Rules[i].Counters.Get(); return p }
	if got(0) != uint64(udpSent) || got(1) != uint64(udpSent) || got(2) != uint64(2*pings) {
		t.Errorf("counters after %d reloads: requests %d, echoes %d, icmp %d; sent %d datagrams and %d pings",
			reloads, got(0), got(1), got(2), udpSent, pings)
	}
	if st.Reloads != reloads || st.Dropped != 0 {
		t.Errorf("stats: %d reloads, %d dropped", st.Reloads, st.Dropped)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v", err)
	}
	_ = os.Remove(counters)
}

// countUDP counts the datagrams arriving on the server's port.
func countUDP(t *testing.T, tp *liveTopo, port uint16) *atomic.Uint64 {
	t.Helper()
	var c *net.UDPConn
	if err := tp.server.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(serverAddr, port)))
		if err == nil {
			err = c.SetReadBuffer(8 << 20)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var n atomic.Uint64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return &n
}

// TestLiveBatchedVerdicts: bursts of datagrams alternating between an
// accepted, a dropped and a marked port reach qtables several at a time,
// so one batch mixes verdicts: every accepted datagram arrives (the marked
// ones with the mark the kernel then sees), no dropped one does.
func TestLiveBatchedVerdicts(t *testing.T) {
	tp := newLiveTopo(t)
	accepted, dropped, marked := countUDP(t, tp, 86), countUDP(t, tp, 87), countUDP(t, tp, 88)
	tp.ipt(t, "-t", "mangle", "-A", "POSTROUTING", "-p", "udp", "--dport", "88", "-m", "mark", "--mark", "0x7")
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -m udp --dport 87 -j DROP
-A FORWARD -p udp -m udp --dport 88 -j MARK --set-xmark 0x7/0xffffffff
COMMIT
`)
	stats := filepath.Join(tp.dir, "stats.json")
	d := tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "0", "--stats-file", stats)
	const bursts, per = 40, 60
	err := tp.client.Do(func() error {
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for b := 0; b < bursts; b++ {
			for i := 0; i < per; i++ {
				dst := netip.AddrPortFrom(serverAddr, uint16(86+i%3))
				if _, err := c.WriteToUDPAddrPort([]byte("burst"), dst); err != nil {
					return err
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const each = bursts * per / 3
	eventually(t, 10*time.Second, func() error {
		if accepted.Load() != each || marked.Load() != each {
			return fmt.Errorf("accepted %d, marked %d of %d each", accepted.Load(), marked.Load(), each)
		}
		return nil
	})
	if n := dropped.Load(); n != 0 {
		t.Errorf("%d dropped datagrams arrived", n)
	}
	if k := tp.kernelPackets(t, "mangle", "POSTROUTING"); k != each {
		t.Errorf("the kernel saw %d datagrams with the mark, want %d", k, each)
	}
	st := d.readStats(t, stats)
	if st.Received != 3*each || st.Dropped != each || st.Marked != each || st.VerdictErrors != 0 {
		t.Errorf("stats %+v", st)
	}
	// Verdicts left in batches: fewer datagrams than packets.
	t.Logf("%d packets, %d verdict datagrams, %d verdict messages", st.Received, st.VerdictDatagrams, st.VerdictMessages)
	if st.VerdictDatagrams >= st.Received || st.VerdictMessages > st.Received {
		t.Errorf("verdicts: %d datagrams, %d messages for %d packets", st.VerdictDatagrams, st.VerdictMessages, st.Received)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
