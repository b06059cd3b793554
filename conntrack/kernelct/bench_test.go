package kernelct

import (
	"testing"

	"github.com/qtables/qtables/packet"
)

// BenchmarkLookup measures one Lookup round trip to the real kernel (a
// ctnetlink GET for an established TCP flow in a test namespace, and
// decoding the answer). It needs root; it is skipped like the kernel
// tests otherwise.
func BenchmarkLookup(b *testing.B) {
	l := newLab(b)
	kc := l.open(b, nil)
	client, _ := l.tcp(b)
	orig := flowTuple(packet.ProtoTCP, client)
	ctx := b.Context()
	if _, _, err := kc.Lookup(ctx, orig); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := kc.Lookup(ctx, orig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookupParallel is Lookup from several goroutines sharing one
// Conn: the requests are serialised on its socket.
func BenchmarkLookupParallel(b *testing.B) {
	l := newLab(b)
	kc := l.open(b, nil)
	client, _ := l.tcp(b)
	orig := flowTuple(packet.ProtoTCP, client)
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := kc.Lookup(ctx, orig); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDecode is the userspace half of a Lookup: decoding one
// kernel entry.
func BenchmarkDecode(b *testing.B) {
	m := flowMsg(b, msgNew, 0, sampleEntry())
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := decodeFlow(&m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTupleOf is the per-packet part: the packet's tuple, without
// allocating.
func BenchmarkTupleOf(b *testing.B) {
	v := view(b, ipv4(a1, a2, packet.ProtoTCP, tcpHdr(40000, 443, packet.TCPAck)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := TupleOf(v); err != nil {
			b.Fatal(err)
		}
	}
}
