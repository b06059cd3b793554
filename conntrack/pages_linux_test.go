package conntrack

import (
	"bytes"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkRandomLoads measures what bounds the batched lookup rate on a
// large table: independent loads of random cache lines in 256 MiB (about
// the size of a 1M-flow table), with as many in flight as the core keeps,
// once on 4 KiB pages (what the Go heap gets unless transparent huge
// pages are forced on) and once on memory advised to use 2 MiB pages
// (skipped where the kernel refuses). The difference is the cost of the
// page walks.
func BenchmarkRandomLoads(b *testing.B) {
	const size = 256 << 20
	for _, bc := range []struct {
		name   string
		advice int
	}{{"pages=4K", unix.MADV_NOHUGEPAGE}, {"pages=2M", unix.MADV_HUGEPAGE}} {
		b.Run(bc.name, func(b *testing.B) {
			mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
			if err != nil {
				b.Skip(err)
			}
			defer unix.Munmap(mem)
			if err := unix.Madvise(mem, bc.advice); err != nil {
				b.Skip(err)
			}
			for i := 0; i < len(mem); i += 4096 {
				mem[i] = 1
			}
			words := unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), size/8)
			rng := rand.New(rand.NewPCG(1, 2))
			idx := make([]uint32, 1<<16)
			for i := range idx {
				idx[i] = uint32(rng.IntN(size/64)) * 8
			}
			var sum uint64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sum += words[idx[i&(len(idx)-1)]]
			}
			loadSink = sum
		})
	}
}

var loadSink uint64

// anonHugeBytes is the process's anonymous memory on huge pages
// (AnonHugePages in /proc/self/smaps_rollup), 0 if unknown.
func anonHugeBytes() int64 {
	data, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(data) {
		if rest, ok := bytes.CutPrefix(line, []byte("AnonHugePages:")); ok {
			f := bytes.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(string(f[0]), 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
