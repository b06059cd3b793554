//go:build amd64 || arm64

package conntrack

// prefetch asks the CPU to start loading the cache line at addr
// (PREFETCHT0, PRFM PLDL1KEEP) and returns at once. A prefetch is a hint:
// it never faults, even on an address that is no longer mapped, and it
// reads nothing the program sees, so TrackBatch may aim it at memory it
// does not hold the lock of.
//
//go:noescape
func prefetch(addr uintptr)

// prefetchFlow prefetches the two cache lines of the flow at addr flow.
//
//go:noescape
func prefetchFlow(flow uintptr)

// prefetchEntry prefetches the two cache lines of the flow at addr flow
// and the line at tcp, a TCP connection's tracker slot: one call instead
// of three.
//
//go:noescape
func prefetchEntry(flow, tcp uintptr)
