package queue

import (
	"bufio"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// LogSink writes LOG events as lines, off the packet path: Log copies the
// line into one of a fixed set of buffers and hands it to a writer
// goroutine, so a slow disk or terminal never stalls a worker and memory
// stays bounded. A token bucket limits the lines per second (a flood of
// logged packets cannot fill a disk), and running out of buffers drops the
// line too; both are counted.
type LogSink struct {
	lim  *rate.Limiter
	ch   chan *[]byte
	free chan *[]byte
	w    *bufio.Writer
	done chan struct{}

	written atomic.Uint64
	dropped atomic.Uint64
	errs    atomic.Uint64
	once    sync.Once
}

// logBuffers is the number of lines that can wait for the writer.
const logBuffers = 1024

// NewLogSink starts a sink writing to w at most perSec lines per second
// with bursts of burst lines (perSec <= 0: no limit).
func NewLogSink(w io.Writer, perSec float64, burst int) *LogSink {
	lim := rate.NewLimiter(rate.Inf, 0)
	if perSec > 0 {
		if burst < 1 {
			burst = 1
		}
		lim = rate.NewLimiter(rate.Limit(perSec), burst)
	}
	s := &LogSink{
		lim:  lim,
		ch:   make(chan *[]byte, logBuffers),
		free: make(chan *[]byte, logBuffers),
		w:    bufio.NewWriterSize(w, 64<<10),
		done: make(chan struct{}),
	}
	for range logBuffers {
		b := make([]byte, 0, 256)
		s.free <- &b
	}
	go s.loop()
	return s
}

// Log queues one line (without newline). It never blocks.
func (s *LogSink) Log(line []byte) {
	if !s.lim.Allow() {
		s.dropped.Add(1)
		return
	}
	var bp *[]byte
	select {
	case bp = <-s.free:
	default:
		s.dropped.Add(1) // the writer is that far behind
		return
	}
	*bp = append(append((*bp)[:0], line...), '\n')
	s.ch <- bp // never blocks: there are as many slots as buffers
}

func (s *LogSink) loop() {
	defer close(s.done)
	for bp := range s.ch {
		if _, err := s.w.Write(*bp); err != nil {
			s.errs.Add(1)
		} else {
			s.written.Add(1)
		}
		s.free <- bp
		// Flush whenever the hand-off buffer is empty: lines appear
		// promptly, and a burst is written in large chunks.
		if len(s.ch) == 0 {
			if err := s.w.Flush(); err != nil {
				s.errs.Add(1)
			}
		}
	}
	if err := s.w.Flush(); err != nil {
		s.errs.Add(1)
	}
}

// Close writes the queued lines and stops the sink. Log must not be called
// after Close.
func (s *LogSink) Close() {
	s.once.Do(func() { close(s.ch) })
	<-s.done
}

// Written, Dropped and Errors count lines written, lines dropped by the
// rate limit or a full buffer, and failed writes.
func (s *LogSink) Written() uint64 { return s.written.Load() }
func (s *LogSink) Dropped() uint64 { return s.dropped.Load() }
func (s *LogSink) Errors() uint64  { return s.errs.Load() }
