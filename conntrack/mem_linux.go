package conntrack

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const canMap = true

// mapRegion maps n bytes (a multiple of hugePage) of anonymous private
// memory, 2 MiB aligned, and advises the kernel to back it with huge
// pages. raw is the whole mapping (for unmapRegion); usable its aligned
// n bytes. The mapping is made one huge page larger than asked so that an
// aligned stretch fits; the unused ends are never touched and so take no
// memory.
func mapRegion(n int) (raw, usable []byte, err error) {
	n = (n + hugePage - 1) &^ (hugePage - 1)
	raw, err = unix.Mmap(-1, 0, n+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	off := (hugePage - int(uintptr(unsafe.Pointer(unsafe.SliceData(raw)))%hugePage)) % hugePage
	usable = raw[off : off+n : off+n]
	if err := unix.Madvise(usable, unix.MADV_HUGEPAGE); err != nil {
		unix.Munmap(raw)
		return nil, nil, err
	}
	return raw, usable, nil
}

func unmapRegion(raw []byte) { unix.Munmap(raw) }
