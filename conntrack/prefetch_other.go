//go:build !amd64 && !arm64

package conntrack

// prefetch is a no-op where qtables has no prefetch instruction wired up:
// TrackBatch then does the same work as TrackInto in a loop.
func prefetch(addrs []uintptr) {}
