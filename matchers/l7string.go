package matchers

// string --stream, a qtables extension of the string match: the pattern is
// searched in the first bytes of each direction of a TCP connection, as
// reassembled in sequence order (see l7.go), not packet by packet, so an
// occurrence split over two segments is found, which xt_string cannot do.
//
//	-p tcp -m string --algo bm|kmp --string TEXT --to DEPTH [--from N] [--icase] --stream
//
// --from and --to count from the first byte of the stream (not of the IP
// header, as without --stream); --to is required and is the depth searched:
// an occurrence must lie entirely in [from, to). From the packet that
// completes an occurrence in either direction on, every packet of the
// connection matches (with "!": fails). Until then the connection's
// packets fail (with "!": match); a packet without a TCP header fails
// either way.
//
// The search is exact (every occurrence is found, --icase folding with the
// kernel's Latin-1 table as without --stream): the kernel's Boyer-Moore
// misses some occurrences that a stream has no packet boundaries to
// excuse, so --algo is kept for the rule's syntax and printing only.

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qtables/qtables/packet"
)

// streamSearch is one --stream pattern: a streaming KMP over a flow's
// in-order bytes, whose per-direction state is one int32 in the flow's
// record (slot names it).
type streamSearch struct {
	from, to int
	pattern  []byte // kernel-upper-cased with --icase
	fold     *[256]byte
	prefix   []int32
	slot     int
}

func newStreamSearch(m *stringMatch) *streamSearch {
	s := &streamSearch{from: int(m.from), to: int(m.to), pattern: m.search, fold: m.fold}
	s.prefix = make([]int32, len(s.pattern))
	k := int32(0)
	for q := 1; q < len(s.pattern); q++ {
		for k > 0 && s.pattern[k] != s.pattern[q] {
			k = s.prefix[k-1]
		}
		if s.pattern[k] == s.pattern[q] {
			k++
		}
		s.prefix[q] = k
	}
	return s
}

// feed continues the search over the bytes of p after offset before (the
// in-order prefix grew from before to len(p) bytes), limited to the
// window [from, to). state is the number of pattern bytes matched so far.
// It reports whether the pattern is complete.
func (s *streamSearch) feed(state *int32, p []byte, before int) bool {
	lo, hi := max(before, s.from), min(len(p), s.to)
	q, n := *state, int32(len(s.pattern))
	for _, c := range p[min(lo, hi):hi] {
		c = s.fold[c]
		for q > 0 && s.pattern[q] != c {
			q = s.prefix[q-1]
		}
		if s.pattern[q] == c {
			q++
		}
		if q == n {
			*state = q
			return true
		}
	}
	*state = q
	return false
}

// streamStringMatch is a string match with --stream.
type streamStringMatch struct {
	l7Base
	str    *stringMatch // the options, for printing
	search *streamSearch
}

// newStreamStringMatch builds the --stream form of m; toGiven says
// whether --to was given.
func newStreamStringMatch(m *stringMatch, toGiven bool, r *Rule) (Match, error) {
	if err := requireProto(r, "string --stream", packet.ProtoTCP); err != nil {
		return nil, err
	}
	if !toGiven {
		return nil, errors.New("--stream needs --to DEPTH: the number of bytes of each direction searched")
	}
	if int(m.to)-int(m.from) < len(m.pattern) {
		return nil, fmt.Errorf("--stream: the window [%d, %d) is shorter than the pattern", m.from, m.to)
	}
	s := newStreamSearch(m)
	sm := &streamStringMatch{str: m, search: s}
	sm.t = newL7Table(L7Config{Depth: 1}, 0, []*streamSearch{s})
	return sm, nil
}

func (m *streamStringMatch) l7Needs() l7Need               { return 0 }
func (m *streamStringMatch) l7StreamSearch() *streamSearch { return m.search }

// Match feeds the packet to its flow and reports whether the flow's
// stream held the pattern so far.
func (m *streamStringMatch) Match(c *Context) bool {
	sh, f := m.t.acquire(c)
	if f == nil {
		return false
	}
	found := f.streamFound[m.search.slot]
	sh.mu.Unlock()
	return found != m.str.inv
}

// Save prints the string match's options and " --stream".
func (m *streamStringMatch) Save(b *strings.Builder) {
	m.str.Save(b)
	b.WriteString(" --stream")
}

// List prints the string match's -L form and " STREAM".
func (m *streamStringMatch) List(b *strings.Builder, numeric bool) {
	m.str.List(b, numeric)
	b.WriteString(" STREAM")
}
