package bench

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// TrafficSpec describes traffic generated to exercise a filter list: flows
// aimed at each filter in turn (every filter gets a flow before any gets a
// second), a share of flows aimed at no filter, flows of heavy-tailed
// length interleaved a few at a time (flow locality), and a frame size mix.
type TrafficSpec struct {
	// Packets is the number of packets; 0 generates at least 10000 and
	// enough for a packet aimed at every filter.
	Packets int
	// Miss is the share of flows built to match no filter (0..1).
	Miss float64
	// Flow is the mean number of packets per flow. Lengths are Pareto
	// distributed (shape 1.5) around it: most flows are short, a few long.
	Flow float64
	// Active is how many flows are interleaved at any time.
	Active int
	// Sizes are the captured frame lengths (Ethernet header included, no
	// FCS) picked with the weights in SizeWeights; a size below what the
	// headers need is raised to it.
	Sizes       []int
	SizeWeights []int
	Seed        uint64
}

// IMIX is the simple Internet mix: 64, 594 and 1518-byte frames (with FCS)
// in the ratio 7:4:1, given here without the 4-byte FCS.
var IMIX = struct{ Sizes, Weights []int }{[]int{60, 590, 1514}, []int{7, 4, 1}}

// DefaultTraffic: 5% misses, flows of 4 packets on average, 32 at a time,
// IMIX sizes.
func DefaultTraffic() TrafficSpec {
	return TrafficSpec{Miss: 0.05, Flow: 4, Active: 32, Sizes: IMIX.Sizes, SizeWeights: IMIX.Weights, Seed: 1}
}

// ParseTraffic reads comma-separated key=value pairs over the defaults:
// packets=N, miss=F, flow=F, active=N, sizes=imix or N[:N...] (equal
// weights), seed=N.
func ParseTraffic(s string) (TrafficSpec, error) {
	sp := DefaultTraffic()
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return sp, fmt.Errorf("traffic spec: %q is not key=value", kv)
		}
		var err error
		switch k {
		case "packets":
			sp.Packets, err = strconv.Atoi(v)
		case "miss":
			sp.Miss, err = strconv.ParseFloat(v, 64)
		case "flow":
			sp.Flow, err = strconv.ParseFloat(v, 64)
		case "active":
			sp.Active, err = strconv.Atoi(v)
		case "seed":
			sp.Seed, err = strconv.ParseUint(v, 10, 64)
		case "sizes":
			if v == "imix" {
				sp.Sizes, sp.SizeWeights = IMIX.Sizes, IMIX.Weights
				break
			}
			sp.Sizes, sp.SizeWeights = nil, nil
			for _, p := range strings.Split(v, ":") {
				n, perr := strconv.Atoi(p)
				if perr != nil || n < 0 || n > 9000 {
					err = fmt.Errorf("%q is not a frame size (0..9000)", p)
					break
				}
				sp.Sizes = append(sp.Sizes, n)
				sp.SizeWeights = append(sp.SizeWeights, 1)
			}
		default:
			return sp, fmt.Errorf("traffic spec: unknown key %q", k)
		}
		if err != nil {
			return sp, fmt.Errorf("traffic spec: %s: %v", k, err)
		}
	}
	if sp.Packets < 0 || sp.Miss < 0 || sp.Miss > 1 || sp.Flow < 1 || sp.Active < 1 {
		return sp, fmt.Errorf("traffic spec: need packets >= 0, 0 <= miss <= 1, flow >= 1, active >= 1")
	}
	return sp, nil
}

// Packet is one generated packet.
type Packet struct {
	Time  time.Time
	Frame []byte // Ethernet
	Tuple Tuple
	// Aim is the index of the filter the packet was built to match, or -1
	// for a packet built to match none. First match may decide otherwise:
	// an earlier filter can cover the packet too.
	Aim int
}

// Start is the timestamp of the first generated packet.
var Start = time.Date(2026, 1, 5, 9, 30, 0, 0, time.UTC)

// Generate builds the traffic for fs. Packets are 10 µs apart.
func (sp TrafficSpec) Generate(fs []Filter) []Packet {
	r := rand.New(rand.NewPCG(sp.Seed, sp.Seed^0x2545f4914f6cdd1d))
	// With Packets 0, generate until every filter has had a packet aimed
	// at it and at least 10000 packets (bounded, should most flows miss).
	n, untilCovered := sp.Packets, sp.Packets == 0
	if untilCovered {
		n = 10000
	}
	limit := max(n, 100*len(fs)+10000)
	covered := make([]bool, len(fs))
	ncovered := 0
	sizes := weighted[int]{vals: sp.Sizes, w: sp.SizeWeights}
	for _, w := range sp.SizeWeights {
		sizes.sum += w
	}
	if sizes.sum == 0 {
		sizes = weighted[int]{vals: IMIX.Sizes, w: IMIX.Weights, sum: 12}
	}
	type flow struct {
		t    Tuple
		aim  int
		left int
		seq  uint32
	}
	var cycle []int
	next := func() (Tuple, int) {
		if len(fs) == 0 || r.Float64() < sp.Miss {
			return missTuple(r, fs), -1
		}
		if len(cycle) == 0 {
			cycle = r.Perm(len(fs))
		}
		k := cycle[len(cycle)-1]
		cycle = cycle[:len(cycle)-1]
		return tupleIn(r, &fs[k]), k
	}
	flowLen := func() int {
		// Pareto with shape 1.5 has mean 3 × xm.
		xm := sp.Flow / 3
		u := 1 - r.Float64()
		l := int(math.Ceil(xm / math.Pow(u, 1/1.5)))
		return min(max(l, 1), 10000)
	}
	active := make([]flow, max(sp.Active, 1))
	for i := range active {
		t, aim := next()
		active[i] = flow{t: t, aim: aim, left: flowLen()}
	}
	out := make([]Packet, 0, n)
	ts := Start
	for len(out) < n || untilCovered && ncovered < len(fs) && len(out) < limit {
		i := r.IntN(len(active))
		f := &active[i]
		ts = ts.Add(10 * time.Microsecond)
		out = append(out, Packet{Time: ts, Frame: EncodeFrame(&f.t, sizes.pick(r), f.seq), Tuple: f.t, Aim: f.aim})
		if f.aim >= 0 && !covered[f.aim] {
			covered[f.aim] = true
			ncovered++
		}
		f.seq++
		if f.left--; f.left <= 0 {
			t, aim := next()
			*f = flow{t: t, aim: aim, left: flowLen()}
		}
	}
	return out
}

// tupleIn returns a random packet header that f matches.
func tupleIn(r *rand.Rand, f *Filter) Tuple {
	t := Tuple{Src: addrIn(r, f.Src), Dst: addrIn(r, f.Dst), Proto: f.Proto}
	if t.Proto == 0 {
		// TCP, UDP, ICMP 6:3:1; only TCP and UDP when f has ports.
		switch k := r.IntN(10); {
		case k < 6:
			t.Proto = 6
		case k < 9 || f.HasPorts():
			t.Proto = 17
		default:
			t.Proto = 1
		}
	}
	if t.Proto == 6 || t.Proto == 17 {
		t.HasPorts = true
		t.SPort = portIn(r, f.SPort, PortRange{1024, 65535})
		t.DPort = portIn(r, f.DPort, PortRange{1, 1023})
	}
	return t
}

// missTuple returns a random header that matches no filter of fs, when it
// finds one in a few tries; otherwise the last one tried.
func missTuple(r *rand.Rand, fs []Filter) Tuple {
	var t Tuple
	for try := 0; try < 8; try++ {
		t = Tuple{Src: addrFrom(r.Uint32()), Dst: addrFrom(r.Uint32()), Proto: []uint8{6, 17, 1}[r.IntN(3)]}
		if t.Proto != 1 {
			t.HasPorts = true
			t.SPort, t.DPort = uint16(1024+r.IntN(64512)), uint16(1+r.IntN(65535))
		}
		if FirstMatch(fs, &t) < 0 {
			break
		}
	}
	return t
}

func addrIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	bits := p.Bits()
	if bits >= 32 {
		return p.Addr()
	}
	host := r.Uint32() & (1<<(32-bits) - 1)
	return addrFrom(addrBits(p.Masked().Addr()) | host)
}

// portIn picks a port of pr; for the full range, one of typical (an
// ephemeral client port, a service port) most of the time.
func portIn(r *rand.Rand, pr, typical PortRange) uint16 {
	if pr.Any() && r.IntN(10) < 9 {
		pr = typical
	}
	return uint16(int(pr.Lo) + r.IntN(int(pr.Hi)-int(pr.Lo)+1))
}

// EncodeFrame returns an Ethernet frame carrying t, size bytes long (or the
// minimum its headers need), with valid IPv4, TCP and UDP checksums. TCP
// segments are SYN when seq is 0, ACK after; ICMP packets are echo
// requests; other protocols carry size-padding as their payload.
func EncodeFrame(t *Tuple, size int, seq uint32) []byte {
	l4 := 0
	switch t.Proto {
	case 6:
		l4 = 20
	case 17, 1:
		l4 = 8
	}
	size = max(size, 14+20+l4)
	b := make([]byte, size)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 0xfe})
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 0x01})
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], uint16(seq))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = 64
	ip[9] = t.Proto
	s, d := t.Src.As4(), t.Dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(0, ip[:20]))
	seg := ip[20:]
	switch t.Proto {
	case 6:
		binary.BigEndian.PutUint16(seg[0:], t.SPort)
		binary.BigEndian.PutUint16(seg[2:], t.DPort)
		binary.BigEndian.PutUint32(seg[4:], 1000+seq)
		seg[12] = 5 << 4
		if seq == 0 {
			seg[13] = 0x02 // SYN
		} else {
			seg[13] = 0x10 // ACK
			binary.BigEndian.PutUint32(seg[8:], 1)
		}
		binary.BigEndian.PutUint16(seg[14:], 64240)
		binary.BigEndian.PutUint16(seg[16:], ^onesSum(pseudoSum(ip, len(seg)), seg))
	case 17:
		binary.BigEndian.PutUint16(seg[0:], t.SPort)
		binary.BigEndian.PutUint16(seg[2:], t.DPort)
		binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
		c := ^onesSum(pseudoSum(ip, len(seg)), seg)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(seg[6:], c)
	case 1:
		seg[0] = 8 // echo request
		binary.BigEndian.PutUint16(seg[4:], uint16(seq>>16))
		binary.BigEndian.PutUint16(seg[6:], uint16(seq))
		binary.BigEndian.PutUint16(seg[2:], ^onesSum(0, seg))
	}
	return b
}

func pseudoSum(ip []byte, l4len int) uint32 {
	var p [12]byte
	copy(p[0:8], ip[12:20])
	p[9] = ip[9]
	binary.BigEndian.PutUint16(p[10:], uint16(l4len))
	return onesSum32(0, p[:])
}

// onesSum folds the Internet checksum of b into 16 bits, starting at sum.
func onesSum(sum uint32, b []byte) uint16 {
	sum = onesSum32(sum, b)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func onesSum32(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
		if sum > 0xffff0000 {
			sum = sum&0xffff + sum>>16
		}
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}
