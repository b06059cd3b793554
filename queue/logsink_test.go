package queue

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qtables/qtables/matchers"
)

// Lines from the spec's worked examples (§6.3.1), as the kernel prints
// them.
const (
	specSSHLine  = "SSH-IN: IN=eth0 OUT= MAC=52:54:00:aa:bb:cc:52:54:00:11:22:33:08:00 SRC=198.51.100.7 DST=192.0.2.10 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=31337 DF PROTO=TCP SPT=51514 DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0 "
	specDNSLine  = "IN= OUT=eth0 SRC=192.0.2.10 DST=203.0.113.53 LEN=71 TOS=0x00 PREC=0x00 TTL=64 ID=4242 PROTO=UDP SPT=40123 DPT=53 LEN=51 "
	specEchoLine = "IN=eth1 OUT=eth0 MAC=00:16:3e:00:00:01:00:16:3e:00:00:02:08:00 SRC=10.0.0.5 DST=8.8.8.8 LEN=84 TOS=0x00 PREC=0x00 TTL=63 ID=0 DF PROTO=ICMP TYPE=8 CODE=0 ID=4711 SEQ=1 MARK=0x1 "
	specUnrLine  = "IN=eth0 OUT= MAC=52:54:00:aa:bb:cc:52:54:00:11:22:33:08:00 SRC=192.0.2.1 DST=192.0.2.10 LEN=56 TOS=0x00 PREC=0xC0 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=3 [SRC=192.0.2.10 DST=192.0.2.1 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=2 PROTO=UDP SPT=5000 DPT=9 LEN=8 ] "
)

func TestParseLogLine(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	cases := []struct {
		line   string
		prefix string
		fields map[string]string
		flags  []string
	}{
		{specSSHLine, "SSH-IN: ", map[string]string{"IN": "eth0", "OUT": "", "MAC": "52:54:00:aa:bb:cc:52:54:00:11:22:33:08:00",
			"SRC": "198.51.100.7", "DST": "192.0.2.10", "LEN": "60", "TOS": "0x00", "PREC": "0x00", "TTL": "52", "ID": "31337",
			"PROTO": "TCP", "SPT": "51514", "DPT": "22", "WINDOW": "64240", "RES": "0x00", "URGP": "0"}, []string{"DF", "SYN"}},
		{specDNSLine, "", map[string]string{"IN": "", "OUT": "eth0", "SRC": "192.0.2.10", "DST": "203.0.113.53", "LEN": "71",
			"TOS": "0x00", "PREC": "0x00", "TTL": "64", "ID": "4242", "PROTO": "UDP", "SPT": "40123", "DPT": "53", "UDP_LEN": "51"}, nil},
		{specEchoLine, "", map[string]string{"IN": "eth1", "OUT": "eth0", "MAC": "00:16:3e:00:00:01:00:16:3e:00:00:02:08:00",
			"SRC": "10.0.0.5", "DST": "8.8.8.8", "LEN": "84", "TOS": "0x00", "PREC": "0x00", "TTL": "63", "ID": "0", "PROTO": "ICMP",
			"TYPE": "8", "CODE": "0", "ICMP_ID": "4711", "SEQ": "1", "MARK": "0x1"}, []string{"DF"}},
		{specUnrLine, "", map[string]string{"IN": "eth0", "OUT": "", "MAC": "52:54:00:aa:bb:cc:52:54:00:11:22:33:08:00",
			"SRC": "192.0.2.1", "DST": "192.0.2.10", "LEN": "56", "TOS": "0x00", "PREC": "0xC0", "TTL": "64", "ID": "1", "PROTO": "ICMP",
			"TYPE": "3", "CODE": "3",
			"INNER": "SRC=192.0.2.10 DST=192.0.2.1 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=2 PROTO=UDP SPT=5000 DPT=9 LEN=8"}, nil},
		{"p: IN=a OUT= SRC=1.2.3.4 DST=5.6.7.8 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=777 FRAG:185 OPT (0101) PROTO=TCP INCOMPLETE [12 bytes] ",
			"p: ", map[string]string{"IN": "a", "OUT": "", "SRC": "1.2.3.4", "DST": "5.6.7.8", "LEN": "40", "TOS": "0x00", "PREC": "0x00",
				"TTL": "64", "ID": "777", "FRAG": "185", "IPOPT": "0101", "PROTO": "TCP", "INCOMPLETE": "12 bytes"}, nil},
		{"IN=a OUT= SRC=1.2.3.4 DST=5.6.7.8 LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=1 DPT=2 WINDOW=0 RES=0x00 SYN URGP=0 OPT (020405B4) ",
			"", map[string]string{"IN": "a", "OUT": "", "SRC": "1.2.3.4", "DST": "5.6.7.8", "LEN": "44", "TOS": "0x00", "PREC": "0x00",
				"TTL": "64", "ID": "1", "PROTO": "TCP", "SPT": "1", "DPT": "2", "WINDOW": "0", "RES": "0x00", "URGP": "0", "TCPOPT": "020405B4"},
			[]string{"SYN"}},
	}
	for _, c := range cases {
		got := ParseLogLine(&LogRecord{Time: now, Level: 6, Chain: "INPUT", Rule: 3, Line: []byte(c.line)})
		if got.Prefix != c.prefix || !reflect.DeepEqual(got.Fields, c.fields) || !reflect.DeepEqual(got.Flags, c.flags) ||
			got.Level != "info" || got.Line != c.line || got.Chain != "INPUT" || got.Rule != 3 || !got.Time.Equal(now) {
			t.Errorf("%q:\n got prefix %q fields %v flags %v level %s\nwant prefix %q fields %v flags %v", c.line,
				got.Prefix, got.Fields, got.Flags, got.Level, c.prefix, c.fields, c.flags)
		}
	}
}

func TestJSONLog(t *testing.T) {
	var buf syncBuffer
	s := NewLogSink(JSONLog(&buf), 0, 0)
	s.Log(&matchers.Event{Kind: matchers.EventLog, Level: 4, Chain: "FORWARD", Rule: 2, Text: []byte(specSSHLine)})
	s.Log(&matchers.Event{Kind: matchers.EventLog, Level: 7, Chain: "OUTPUT", Rule: 1, Text: []byte(specDNSLine)})
	s.Close()
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	var got []LogJSON
	for sc.Scan() {
		var l LogJSON
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		got = append(got, l)
	}
	if len(got) != 2 || got[0].Fields["DPT"] != "22" || got[0].Level != "warning" || got[0].Chain != "FORWARD" ||
		got[0].Line != specSSHLine || got[1].Level != "debug" || got[1].Fields["UDP_LEN"] != "51" || time.Since(got[0].Time) > time.Minute {
		t.Errorf("JSON lines %+v", got)
	}
}

// listenSyslog is a syslog daemon's socket: a unix datagram socket at
// path.
func listenSyslog(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readSyslog(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestSyslogLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	c := listenSyslog(t, path)
	defer c.Close()
	w := SyslogLog(path, "qtables")
	defer w.Close()
	when := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	for _, level := range []uint8{4, 6, 0, 7} {
		if err := w.WriteLog(&LogRecord{Time: when, Level: level, Line: []byte(specSSHLine)}); err != nil {
			t.Fatal(err)
		}
		// LOG_KERN is facility 0: the priority is the level itself.
		want := "<" + strconv.Itoa(int(level)) + ">Mar  4 05:06:07 qtables[" + strconv.Itoa(pid()) + "]: " + specSSHLine
		if got := readSyslog(t, c); got != want {
			t.Errorf("level %d:\n got %q\nwant %q", level, got, want)
		}
	}
	// The syslog daemon restarts: its socket is re-created, and the next
	// line reaches the new one.
	c.Close()
	if err := w.WriteLog(&LogRecord{Time: when, Level: 4, Line: []byte("lost")}); err == nil {
		t.Error("a write to a closed syslog socket succeeded")
	}
	os.Remove(path)
	c = listenSyslog(t, path)
	defer c.Close()
	if err := w.WriteLog(&LogRecord{Time: when, Level: 4, Line: []byte("after restart")}); err != nil {
		t.Fatal(err)
	}
	if got := readSyslog(t, c); !strings.HasSuffix(got, "]: after restart") {
		t.Errorf("after restart: %q", got)
	}
}

func TestSyslogLogStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w := SyslogLog(path, "qt")
	defer w.Close()
	go func() {
		w.WriteLog(&LogRecord{Time: time.Now(), Level: 5, Line: []byte("one")})
		w.WriteLog(&LogRecord{Time: time.Now(), Level: 5, Line: []byte("two")})
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	for _, want := range []string{"one", "two"} {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(line, "<5>") || !strings.HasSuffix(line, "]: "+want+"\n") {
			t.Errorf("stream line %q", line)
		}
	}
}

// TestSinkSyslogLevels: the daemon's path from a rule's --log-level to the
// syslog priority, with the lines the Judge produces.
func TestSinkSyslogLevels(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	c := listenSyslog(t, path)
	defer c.Close()
	r := mustRules(t, `*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -p tcp -j LOG --log-prefix "qt-info: " --log-level info
-A FORWARD -p tcp -j LOG --log-prefix "qt-default: "
-A FORWARD -p tcp -j LOG --log-prefix "qt-crit: " --log-level 2
COMMIT
`)
	j := NewJudge(matchers.Accept)
	m := fwdMeta()
	j.Judge(r, tcpSyn("10.0.1.2", "10.0.2.2", 1, 22), &m)
	s := NewLogSink(SyslogLog(path, "qtables"), 0, 0)
	for i := range j.Events() {
		s.Log(&j.Events()[i])
	}
	s.Close()
	for _, want := range []string{"<6>", "<4>", "<2>"} {
		got := readSyslog(t, c)
		if !strings.HasPrefix(got, want) || !strings.Contains(got, "]: qt-") || !strings.Contains(got, " SRC=10.0.1.2 DST=10.0.2.2 ") {
			t.Errorf("got %q, want priority %s", got, want)
		}
	}
	if s.Written() != 3 || s.Errors() != 0 {
		t.Errorf("written %d, errors %d", s.Written(), s.Errors())
	}
}

func TestSinkCountsWriteErrors(t *testing.T) {
	s := NewLogSink(SyslogLog(filepath.Join(t.TempDir(), "nobody"), "qt"), 0, 0)
	s.Log(&matchers.Event{Kind: matchers.EventLog, Text: []byte("x")})
	s.Close()
	if s.Errors() != 1 || s.Written() != 0 || s.LastError() == nil || !bytes.Contains([]byte(s.LastError().Error()), []byte("nobody")) {
		t.Errorf("errors %d written %d last %v", s.Errors(), s.Written(), s.LastError())
	}
}

func pid() int { return os.Getpid() }
