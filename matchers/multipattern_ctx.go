package matchers

// Where a packet's string scan is kept between the string matches that
// read it: per-packet state, so it lives in the Context (one per worker,
// Reset between packets, which marks the scan stale but keeps its buffers).

// stringScans is the per-packet slot for the string set's scan.
type stringScans struct {
	sc *stringScan
	// valid says sc is the scan of the current packet.
	valid bool
}

// get returns the current packet's scan by set, scanning data on first
// use.
func (s *stringScans) get(set *stringSet, data []byte) *stringScan {
	if s.sc == nil || s.sc.set != set {
		s.sc, s.valid = set.newScan(), false
	}
	if !s.valid {
		set.scan(s.sc, data)
		s.valid = true
	}
	return s.sc
}

// reset marks the scan stale: the next packet is scanned afresh.
func (s *stringScans) reset() { s.valid = false }

// stringScanOf returns the scan of c's packet by set, scanning the
// datagram on first use in this packet.
func stringScanOf(c *Context, set *stringSet) *stringScan {
	return c.strings.get(set, c.Pkt.Network)
}
