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
