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

// BenchmarkSetMark is the offload hand-back: one masked mark update of an
// established TCP flow in the real kernel (CTA_MARK with CTA_MARK_MASK,
// acknowledged).
//
// Under MarkMaskProbe the first update with bits outside the mask decides;
// the "undecided" case is a mark with no such bits, where every update
// also reads the mark first.
func BenchmarkSetMark(b *testing.B) {
	l := newLab(b)
	client, _ := l.tcp(b)
	orig := flowTuple(packet.ProtoTCP, client)
	ctx := b.Context()
	for _, bc := range []struct {
		name  string
		mode  MarkMaskMode
		other uint32 // mark bits outside the mask
	}{
		{"probed", MarkMaskProbe, 0x1},
		{"undecided", MarkMaskProbe, 0},
		{"kernel", MarkMaskKernel, 0},
		{"rmw", MarkMaskReadModifyWrite, 0x1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			kc, err := Open(ctx, Options{Namespace: l.srv.Path(), MarkMask: bc.mode})
			if err != nil {
				b.Fatal(err)
			}
			defer kc.Close()
			if err := kc.SetMark(ctx, orig, bc.other, ^uint32(0)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := uint32(0)
			for b.Loop() {
				i++
				if err := kc.SetMark(ctx, orig, i<<8, 0xff00); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
