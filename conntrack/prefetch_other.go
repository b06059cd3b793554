//go:build !amd64 && !arm64

package conntrack

// prefetch, prefetchFlow and prefetchEntry are no-ops where qtables has no prefetch
// instruction wired up: TrackBatch then does the same work as TrackInto in
// a loop.
func prefetch(addr uintptr)           {}
func prefetchEntry(flow, tcp uintptr) {}
func prefetchFlow(flow uintptr)       {}
