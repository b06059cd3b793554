package conformance

import (
	"fmt"
	"math/rand/v2"
	"net"
)

// Case is one generated conformance case: a rule set and the packets sent
// through it. It is a pure function of Seed.
type Case struct {
	Seed    uint64
	Rules   string
	Hints   *Hints
	Packets []Packet
}

// Generate returns the case for seed. The number of packets varies with
// the seed (between 250 and 700) so that counters are not all small.
func Generate(seed uint64) *Case {
	r := newRand(seed)
	rules, hints := GenerateRules(r)
	n := 250 + r.IntN(451)
	return &Case{Seed: seed, Rules: rules, Hints: hints, Packets: GeneratePackets(r, hints, n)}
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
