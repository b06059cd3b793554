package queue

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/qtables/qtables/matchers"
)

// LogRecord is one LOG event on its way to a LogWriter. Line is the
// kernel's line (without newline); it and the record are reused once
// WriteLog returns.
type LogRecord struct {
	Time time.Time
	// Level is the rule's --log-level, a syslog severity (0..7).
	Level uint8
	// Chain and Rule name the LOG rule (Rule counts from 1).
	Chain string
	Rule  int
	Line  []byte
}

// LogWriter is where a LogSink's writer goroutine puts LOG records: a
// text stream (PlainLog), JSON lines (JSONLog) or the local syslog socket
// (SyslogLog). It is used by one goroutine at a time.
type LogWriter interface {
	WriteLog(r *LogRecord) error
	// Flush is called whenever no record is waiting.
	Flush() error
	Close() error
}

// LogSink writes LOG events off the packet path: Log copies the event into
// one of a fixed set of records and hands it to a writer goroutine, so a
// slow disk, terminal or syslog daemon never stalls a worker and memory
// stays bounded. A token bucket limits the events per second (a flood of
// logged packets cannot fill a disk), and running out of records drops the
// event too; both are counted as dropped.
type LogSink struct {
	lim  *rate.Limiter
	ch   chan *LogRecord
	free chan *LogRecord
	w    LogWriter
	done chan struct{}

	written atomic.Uint64
	dropped atomic.Uint64
	errs    atomic.Uint64
	once    sync.Once
	lastErr atomic.Pointer[error]
}

// logBuffers is the number of events that can wait for the writer.
const logBuffers = 1024

// NewLogSink starts a sink writing to w at most perSec events per second
// with bursts of burst events (perSec <= 0: no limit).
func NewLogSink(w LogWriter, perSec float64, burst int) *LogSink {
	lim := rate.NewLimiter(rate.Inf, 0)
	if perSec > 0 {
		if burst < 1 {
			burst = 1
		}
		lim = rate.NewLimiter(rate.Limit(perSec), burst)
	}
	s := &LogSink{
		lim:  lim,
		ch:   make(chan *LogRecord, logBuffers),
		free: make(chan *LogRecord, logBuffers),
		w:    w,
		done: make(chan struct{}),
	}
	for range logBuffers {
		s.free <- &LogRecord{Line: make([]byte, 0, 256)}
	}
	go s.loop()
	return s
}

// Log queues one LOG event. It never blocks and does not allocate once the
// records have grown to the lines' size.
func (s *LogSink) Log(ev *matchers.Event) {
	if !s.lim.Allow() {
		s.dropped.Add(1)
		return
	}
	var r *LogRecord
	select {
	case r = <-s.free:
	default:
		s.dropped.Add(1) // the writer is that far behind
		return
	}
	r.Time, r.Level, r.Chain, r.Rule = time.Now(), ev.Level, ev.Chain, ev.Rule
	r.Line = append(r.Line[:0], ev.Text...)
	s.ch <- r // never blocks: there are as many slots as records
}

func (s *LogSink) loop() {
	defer close(s.done)
	for r := range s.ch {
		if err := s.w.WriteLog(r); err != nil {
			s.fail(err)
		} else {
			s.written.Add(1)
		}
		s.free <- r
		// Flush whenever the hand-off queue is empty: lines appear
		// promptly, and a burst is written in large chunks.
		if len(s.ch) == 0 {
			if err := s.w.Flush(); err != nil {
				s.fail(err)
			}
		}
	}
	if err := s.w.Flush(); err != nil {
		s.fail(err)
	}
	if err := s.w.Close(); err != nil {
		s.fail(err)
	}
}

func (s *LogSink) fail(err error) {
	s.errs.Add(1)
	s.lastErr.Store(&err)
}

// Close writes the queued events and stops the sink. Log must not be
// called after Close.
func (s *LogSink) Close() {
	s.once.Do(func() { close(s.ch) })
	<-s.done
}

// Written, Dropped and Errors count events written, events dropped by the
// rate limit or a full queue, and failed writes.
func (s *LogSink) Written() uint64 { return s.written.Load() }
func (s *LogSink) Dropped() uint64 { return s.dropped.Load() }
func (s *LogSink) Errors() uint64  { return s.errs.Load() }

// LastError returns the last write error, or nil.
func (s *LogSink) LastError() error {
	if p := s.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// PlainLog writes each line followed by a newline, as the kernel's lines
// appear in a log file.
func PlainLog(w io.Writer) LogWriter { return &plainLog{w: bufio.NewWriterSize(w, 64<<10)} }

type plainLog struct{ w *bufio.Writer }

func (p *plainLog) WriteLog(r *LogRecord) error {
	p.w.Write(r.Line)
	return p.w.WriteByte('\n')
}
func (p *plainLog) Flush() error { return p.w.Flush() }
func (p *plainLog) Close() error { return p.w.Flush() }

// JSONLog writes one JSON object per line: the time, the syslog level
// name, the rule, the prefix, the line's KEY=VALUE fields and flag words,
// and the whole line.
func JSONLog(w io.Writer) LogWriter {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	return &jsonLog{w: bw, enc: enc}
}

type jsonLog struct {
	w   *bufio.Writer
	enc *json.Encoder
}

// LogJSON is the object JSONLog writes per LOG event.
type LogJSON struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Chain string    `json:"chain,omitempty"`
	Rule  int       `json:"rule,omitempty"`
	// Prefix is the rule's --log-prefix (the text before IN=).
	Prefix string `json:"prefix"`
	// Fields are the line's KEY=VALUE pairs (IN, OUT, MAC, SRC, DST, LEN,
	// TTL, PROTO, SPT, DPT, ..., FRAG), a key the transport header
	// repeats prefixed with the protocol (UDP_LEN, ICMP_ID), IPOPT and
	// TCPOPT for the option dumps, INNER for the datagram an ICMP error
	// quotes and INCOMPLETE for a truncated header. Flags are the bare words (DF, SYN, ACK, ...).
	Fields map[string]string `json:"fields"`
	Flags  []string          `json:"flags,omitempty"`
	// Line is the kernel's line as it is.
	Line string `json:"line"`
}

func (j *jsonLog) WriteLog(r *LogRecord) error {
	return j.enc.Encode(ParseLogLine(r))
}
func (j *jsonLog) Flush() error { return j.w.Flush() }
func (j *jsonLog) Close() error { return j.w.Flush() }

// syslogLevels are the names of the syslog severities.
var syslogLevels = [...]string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}

// ParseLogLine splits a LOG record's line into the LogJSON fields.
func ParseLogLine(r *LogRecord) LogJSON {
	line := string(r.Line)
	out := LogJSON{Time: r.Time, Chain: r.Chain, Rule: r.Rule, Line: line, Fields: map[string]string{}}
	if int(r.Level) < len(syslogLevels) {
		out.Level = syslogLevels[r.Level]
	}
	rest := line
	if i := strings.Index(line, "IN="); i >= 0 {
		out.Prefix, rest = line[:i], line[i:]
	}
	toks := strings.Fields(rest)
	proto := false
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		switch {
		case strings.HasPrefix(tok, "["):
			// The quoted datagram of an ICMP error, or INCOMPLETE's
			// byte count: up to the closing bracket.
			j := i
			for j < len(toks) && !strings.HasSuffix(toks[j], "]") {
				j++
			}
			j = min(j, len(toks)-1)
			inner := strings.Trim(strings.Join(toks[i:j+1], " "), "[] ")
			if i > 0 && toks[i-1] == "INCOMPLETE" {
				out.Fields["INCOMPLETE"] = inner
			} else {
				out.Fields["INNER"] = inner
			}
			i = j
		case tok == "INCOMPLETE":
		case tok == "OPT" && i+1 < len(toks) && strings.HasPrefix(toks[i+1], "("):
			key := "IPOPT"
			if proto {
				key = "TCPOPT"
			}
			out.Fields[key] = strings.Trim(toks[i+1], "()")
			i++
		case strings.HasPrefix(tok, "FRAG:"):
			out.Fields["FRAG"] = tok[len("FRAG:"):]
		default:
			k, v, ok := strings.Cut(tok, "=")
			if !ok {
				out.Flags = append(out.Flags, tok)
				continue
			}
			if k == "PROTO" {
				proto = true
			}
			if _, dup := out.Fields[k]; dup && proto {
				// The transport header repeats a key of the IP header
				// (UDP's LEN, an echo's ID): prefix the protocol.
				k = out.Fields["PROTO"] + "_" + k
			}
			if _, dup := out.Fields[k]; !dup {
				out.Fields[k] = v
			}
		}
	}
	return out
}

// SyslogLog sends each LOG event to the local syslog socket at path
// (normally /dev/log) as a datagram in the local syslog format, facility
// kern at the rule's level: "<PRI>Mmm dd hh:mm:ss TAG[PID]: LINE", PRI
// being the level (LOG_KERN is facility 0). A rule such as rsyslog's
// "kern.warning /var/log/iptables.log" then files the lines as it files
// the kernel's. The socket is dialled on first use and again after an
// error (a restarted syslog daemon); a stream socket is used if the path
// is not a datagram socket.
func SyslogLog(path, tag string) LogWriter {
	return &syslogLog{path: path, tag: tag, pid: os.Getpid()}
}

type syslogLog struct {
	path, tag string
	pid       int
	conn      net.Conn
	stream    bool
	buf       []byte
}

// syslogTimeout bounds one write: a wedged syslog daemon costs dropped
// lines, never a stuck writer.
const syslogTimeout = time.Second

func (s *syslogLog) dial() error {
	c, err := net.DialTimeout("unixgram", s.path, syslogTimeout)
	if err == nil {
		s.conn, s.stream = c, false
		return nil
	}
	c, serr := net.DialTimeout("unix", s.path, syslogTimeout)
	if serr != nil {
		return fmt.Errorf("syslog %s: %w", s.path, err)
	}
	s.conn, s.stream = c, true
	return nil
}

func (s *syslogLog) WriteLog(r *LogRecord) error {
	s.buf = fmt.Appendf(s.buf[:0], "<%d>%s %s[%d]: ", r.Level&7, r.Time.Format(time.Stamp), s.tag, s.pid)
	s.buf = append(s.buf, r.Line...)
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if s.conn == nil {
			if err = s.dial(); err != nil {
				return err
			}
		}
		msg := s.buf
		if s.stream {
			msg = append(msg, '\n')
		}
		s.conn.SetWriteDeadline(time.Now().Add(syslogTimeout))
		if _, err = s.conn.Write(msg); err == nil {
			return nil
		}
		s.conn.Close()
		s.conn = nil
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			break // the daemon is alive but not reading: drop this line
		}
	}
	return fmt.Errorf("syslog %s: %w", s.path, err)
}

func (s *syslogLog) Flush() error { return nil }

func (s *syslogLog) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// DiscardLog drops every record (LOG output off).
func DiscardLog() LogWriter { return discardLog{} }

type discardLog struct{}

func (discardLog) WriteLog(*LogRecord) error { return nil }
func (discardLog) Flush() error              { return nil }
func (discardLog) Close() error              { return nil }
