package conformance

import (
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

// Case is one generated conformance case: a rule set and the packets sent
// through it. It is a pure function of Seed and Clock.
type Case struct {
	Seed uint64
	// Clock is the time the rule set's time matches are built around:
	// each keeps one result from TimeMargin before Clock to TimeMargin
	// after it, so the case must be sent (and its pcap stamped, see
	// RunCase) within that span.
	Clock   time.Time
	Rules   string
	Hints   *Hints
	Packets []Packet
}

// DefaultClock is the Clock of Generate: the moment offline pcaps of the
// suite start at (see WritePcap).
func DefaultClock() time.Time { return time.Unix(pcapBaseUnix, 0).UTC() }

// Generate returns the case for seed around DefaultClock. Its time rules
// only have their intended results for packets stamped near that moment,
// as WritePcap stamps them; a case for the kernel, which reads the real
// clock, comes from GenerateAt with the current time.
func Generate(seed uint64) *Case { return GenerateAt(seed, DefaultClock()) }

// GenerateAt returns the case for seed with its time rules around clock.
// The number of packets varies with the seed (between 250 and 700) so that
// counters are not all small.
//
// The string, time and limit matches and the payloads aimed at the string
// matches draw from a second random stream, so that they do not change
// what the rest of a seed's case is.
func GenerateAt(seed uint64, clock time.Time) *Case {
	r, x := newRand(seed), newExtRand(seed)
	rules, hints := generateRules(r, x, clock)
	n := 250 + r.IntN(451)
	return &Case{Seed: seed, Clock: clock, Rules: rules, Hints: hints, Packets: generatePackets(r, x, hints, n)}
}

// Frames returns the case's packets as Ethernet frames from src to dst.
func (c *Case) Frames(src, dst net.HardwareAddr) ([][]byte, error) {
	frames := make([][]byte, len(c.Packets))
	for i := range c.Packets {
		f, err := c.Packets[i].Frame(src, dst)
		if err != nil {
			return nil, fmt.Errorf("seed %d packet %d: %w", c.Seed, i, err)
		}
		frames[i] = f
	}
	return frames, nil
}

// newRand returns the generator's random source for seed.
func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// newExtRand returns the second random source for seed, from which the
// string, time and limit extensions of the generator draw.
func newExtRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed^0x51ae7e5, seed+0x7f4a7c159e3779b9))
}
