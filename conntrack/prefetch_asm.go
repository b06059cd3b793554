//go:build amd64 || arm64

package conntrack

// prefetch asks the CPU to start loading the cache line of every address
// in addrs (PREFETCHT0, PRFM PLDL1KEEP) and returns at once. A prefetch is
// a hint: it never faults, even on an address that is no longer mapped,
// and it reads nothing the program sees, so TrackBatch may aim it at
// memory it does not hold the lock of.
//
//go:noescape
func prefetch(addrs []uintptr)
