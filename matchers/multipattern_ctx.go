package matchers

// Where a packet's string scan is kept between the string matches that
// read it.
//
// The scan must be done once per packet and be visible to every string
// match of the packet's traversal, and only to them: that is per-packet
// state, which only the Context can carry (a Context is per worker and
// Reset between packets). Context does not carry it yet: it needs one
// field and Reset must invalidate it while keeping its buffers:
//
//	// strings caches the packet's scan by the string set (multipattern.go).
//	strings stringScans
//
//	func (c *Context) Reset() {
//		ev, sc, ss := c.Events[:0], c.scratch[:0], c.strings
//		ss.reset()
//		*c = Context{Events: ev, scratch: sc, strings: ss}
//	}
//
// after which stringScanOf returns c.strings.get(set, c.Pkt.Network).
// Until then it returns nil and every string match searches on its own,
// which gives the same answers.

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

// stringScanOf returns the scan of c's packet by set, or nil when the
// Context has no place for it (see above).
func stringScanOf(c *Context, set *stringSet) *stringScan { return nil }
