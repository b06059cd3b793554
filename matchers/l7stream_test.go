package matchers

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// streamModel is the obvious reassembler l7Stream must agree with: one
// flag per byte, first copy wins, a segment refused when the filled bytes
// would form more than l7MaxRanges runs.
type streamModel struct {
	data   []byte
	filled []bool
}

func (m *streamModel) runs(f []bool) int {
	n := 0
	for i := range f {
		if f[i] && (i == 0 || !f[i-1]) {
			n++
		}
	}
	return n
}

func (m *streamModel) add(off int, b []byte) {
	next := append([]bool(nil), m.filled...)
	for i := range b {
		if o := off + i; o >= 0 && o < len(next) {
			next[o] = true
		}
	}
	if m.runs(next) > l7MaxRanges {
		return
	}
	for i := range b {
		if o := off + i; o >= 0 && o < len(m.data) && !m.filled[o] {
			m.data[o] = b[i]
		}
	}
	m.filled = next
}

func (m *streamModel) contiguous() int {
	n := 0
	for n < len(m.filled) && m.filled[n] {
		n++
	}
	return n
}

func TestL7StreamModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 3000; iter++ {
		depth := 1 + rng.IntN(64)
		base := rng.Uint32() // wraps around 2^32 often enough
		var s l7Stream
		s.buf = make([]byte, depth)
		s.syn(base - 1)
		m := streamModel{data: make([]byte, depth), filled: make([]bool, depth)}
		for k := 0; k < 20; k++ {
			off := rng.IntN(depth+20) - 10
			n := rng.IntN(12)
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			before := s.contiguous()
			grew := s.add(base+uint32(off), b)
			m.add(off, b)
			if got, want := s.contiguous(), m.contiguous(); got != want || grew != got-before {
				t.Fatalf("iter %d step %d: add(%d, %d bytes): contiguous %d (grew %d), model %d", iter, k, off, n, got, grew, want)
			}
			if !bytes.Equal(s.prefix(), m.data[:m.contiguous()]) {
				t.Fatalf("iter %d step %d: prefix differs from the model", iter, k)
			}
			for i := 1; i < s.n; i++ {
				if s.ranges[i-1].hi >= s.ranges[i].lo {
					t.Fatalf("ranges not sorted and disjoint: %v", s.ranges[:s.n])
				}
			}
		}
	}
}

func TestL7StreamBase(t *testing.T) {
	var s l7Stream
	s.buf = make([]byte, 8)
	// No SYN: the first data segment sets the base; an earlier
	// retransmission overlapping it adds only the bytes after the base.
	s.add(100, []byte("cd"))
	s.add(98, []byte("abcdef"))
	if got := string(s.prefix()); got != "cdef" {
		t.Errorf("prefix = %q, want cdef", got)
	}
	// First copy wins over a different retransmission.
	s.add(100, []byte("XXXXXXXXXX"))
	if got := string(s.prefix()); got != "cdefXXXX" || !s.full() {
		t.Errorf("prefix = %q full %v, want cdefXXXX full", got, s.full())
	}
	// A SYN restarts the stream; its retransmission does not.
	s.syn(5000)
	s.add(5001, []byte("hi"))
	s.syn(5000)
	if got := string(s.prefix()); got != "hi" {
		t.Errorf("after retransmitted SYN prefix = %q, want hi", got)
	}
	s.syn(9)
	if s.contiguous() != 0 {
		t.Errorf("new SYN kept %d bytes", s.contiguous())
	}
	// Sequence numbers wrapping around 2^32.
	s.syn(0xfffffffe)
	s.add(0xffffffff, []byte("ab"))
	s.add(1, []byte("c"))
	if got := string(s.prefix()); got != "abc" {
		t.Errorf("wrapped prefix = %q, want abc", got)
	}
}

func BenchmarkL7StreamAdd(b *testing.B) {
	var s l7Stream
	s.buf = make([]byte, 4096)
	seg := make([]byte, 1448)
	b.ReportAllocs()
	for b.Loop() {
		s.syn(uint32(b.N))
		s.syn(0)
		s.add(1, seg)
		s.add(1+1448, seg)
		s.add(1+2*1448, seg)
	}
}
