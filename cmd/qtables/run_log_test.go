package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qtables/qtables/queue"
)

const liveLogRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 81 -j LOG --log-prefix "qt-drop81: "
-A FORWARD -p tcp -m tcp --dport 81 -j DROP
-A FORWARD -p icmp -m icmp --icmp-type 8 -j LOG --log-prefix "qt-ping: " --log-level info
COMMIT
`

// TestLiveLogSyslog: with --log-to syslog every LOG event is a datagram to
// the syslog socket (here one the test listens on, never the machine's
// /dev/log), facility kern at the rule's level, carrying the kernel's line.
func TestLiveLogSyslog(t *testing.T) {
	tp := newLiveTopo(t)
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, liveLogRules)
	sock := filepath.Join(tp.dir, "log")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "0", "--log-to", "syslog", "--syslog-socket", sock)
	expectDropped(t, "port 81", tp.dial(81, dropTimeout))
	if err := tp.ping(serverAddr, acceptTimeout); err != nil {
		t.Fatalf("ping: %v", err)
	}
	// Every SYN of the dropped connection is logged at warning (<4>),
	// the echo request at info (<6>).
	wantSyn := fmt.Sprintf("qt-drop81: IN=r0 OUT=r1 MAC=%s:%s:08:00 SRC=%s DST=%s LEN=60 ", tp.r0MAC, tp.clientMAC, clientAddr, serverAddr)
	wantPing := fmt.Sprintf("qt-ping: IN=r0 OUT=r1 MAC=%s:%s:08:00 SRC=%s DST=%s ", tp.r0MAC, tp.clientMAC, clientAddr, serverAddr)
	seen := map[string]bool{}
	buf := make([]byte, 4096)
	for !seen["<4>"] || !seen["<6>"] {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("syslog socket: %v (seen %v)", err, seen)
		}
		msg := string(buf[:n])
		pri, rest, ok := strings.Cut(msg, ">")
		// "<PRI>Mmm dd hh:mm:ss qtables[PID]: LINE"
		_, line, ok2 := strings.Cut(rest, "]: ")
		if !ok || !ok2 || !strings.HasPrefix(rest[len("Jan _2 15:04:05"):], " qtables[") {
			t.Fatalf("not a local syslog message: %q", msg)
		}
		if _, err := time.Parse(time.Stamp, rest[:len(time.Stamp)]); err != nil {
			t.Errorf("timestamp of %q: %v", msg, err)
		}
		switch {
		case pri == "<4" && strings.HasPrefix(line, wantSyn) && strings.Contains(line, " PROTO=TCP ") && strings.Contains(line, " DPT=81 "):
			seen["<4>"] = true
		case pri == "<6" && strings.HasPrefix(line, wantPing) && strings.Contains(line, " PROTO=ICMP TYPE=8 CODE=0 "):
			seen["<6>"] = true
		default:
			t.Errorf("unexpected syslog message %q", msg)
		}
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

// TestLiveLogJSON: --log-to json writes one object per event with the
// line's fields; --log-rate caps them and counts the rest as dropped.
func TestLiveLogJSON(t *testing.T) {
	tp := newLiveTopo(t)
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, liveLogRules)
	logFile, stats := filepath.Join(tp.dir, "log.json"), filepath.Join(tp.dir, "stats.json")
	d := tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "0", "--log-to", "json", "--log-file", logFile,
		"--log-rate", "0.01", "--log-burst", "3", "--stats-file", stats)
	const pings = 6
	for i := 0; i < pings; i++ {
		if err := tp.ping(serverAddr, acceptTimeout); err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
	var lines []queue.LogJSON
	eventually(t, 5*time.Second, func() error {
		b, err := os.ReadFile(logFile)
		if err != nil {
			return err
		}
		lines = nil
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			var l queue.LogJSON
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				return errStop{fmt.Errorf("%q: %v", sc.Text(), err)}
			}
			lines = append(lines, l)
		}
		if len(lines) < 3 {
			return fmt.Errorf("%d JSON lines", len(lines))
		}
		return nil
	})
	for _, l := range lines {
		f := l.Fields
		if l.Prefix != "qt-ping: " || l.Level != "info" || l.Chain != "FORWARD" || l.Rule != 3 || f["IN"] != "r0" || f["OUT"] != "r1" ||
			f["SRC"] != clientAddr.String() || f["DST"] != serverAddr.String() || f["PROTO"] != "ICMP" || f["TYPE"] != "8" ||
			f["MAC"] != fmt.Sprintf("%s:%s:08:00", tp.r0MAC, tp.clientMAC) || !strings.HasPrefix(l.Line, "qt-ping: IN=r0 ") {
			t.Errorf("JSON line %+v", l)
		}
	}
	st := d.readStats(t, stats)
	if len(lines) != 3 || st.LogEvents != pings || st.LogWritten != 3 || st.LogDropped != pings-3 {
		t.Errorf("%d lines; stats: %d events, %d written, %d dropped", len(lines), st.LogEvents, st.LogWritten, st.LogDropped)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
