package matchers

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// NFQUEUE hands the packet to a userspace program through a numbered
// netlink queue. The target itself only computes the verdict (queue number
// and bypass flag); what happens to a queued packet is package queue's
// business (spec §8).
func init() {
	RegisterTarget(&TargetExt{
		Name: "NFQUEUE",
		Options: []Option{
			{Name: "queue-num", Args: 1},
			{Name: "queue-balance", Args: 1},
			{Name: "queue-bypass"},
			{Name: "queue-cpu-fanout"},
		},
		New: func() TargetBuilder { return &nfqueueTargetBuilder{} },
	})
}

// NFQueueTarget is an NFQUEUE target. Total is the number of queues: 1 for
// --queue-num, B-A+1 for --queue-balance A:B (Num is then A).
type NFQueueTarget struct {
	Num       uint16
	Total     uint16
	Bypass    bool
	CPUFanout bool
}

// Apply returns the QUEUE verdict. With --queue-balance the kernel picks
// Num + reciprocal_scale(jhash_3words(lower addr, higher addr, protocol,
// seed), Total), so both directions of a flow share a queue; its seed is
// random per boot, so the queue it picks for a given flow cannot be
// predicted. Offline the same function is used with seed 0: deterministic,
// direction-independent and spread over the range, but not the number a
// live kernel would pick. With --queue-cpu-fanout the kernel uses the CPU
// number modulo Total; offline there is one CPU, number 0, so the queue is
// always Num.
func (t *NFQueueTarget) Apply(c *Context) Verdict {
	q := t.Num
	if t.Total > 1 && !t.CPUFanout {
		h := nfqueueHashV4(c)
		q += uint16(uint64(h) * uint64(t.Total) >> 32)
	}
	return QueueVerdict(q, t.Bypass)
}

// nfqueueHashV4 is the kernel's hash_v4 with seed 0: jhash_3words of the two
// addresses (smaller first, each as the kernel loads a __be32 on a
// little-endian machine) and the protocol.
func nfqueueHashV4(c *Context) uint32 {
	var saddr, daddr uint32
	var proto uint8
	if v := c.Pkt; v != nil && len(v.Network) >= 20 {
		saddr = binary.LittleEndian.Uint32(v.Network[12:16])
		daddr = binary.LittleEndian.Uint32(v.Network[16:20])
		proto = v.Network[9]
	}
	if saddr > daddr {
		saddr, daddr = daddr, saddr
	}
	return jhash3Words(saddr, daddr, uint32(proto), 0)
}

// jhash3Words is Bob Jenkins' lookup3 hash of three words as the kernel's
// jhash_3words computes it.
func jhash3Words(a, b, c, initval uint32) uint32 {
	const jhashInitval = 0xdeadbeef
	iv := initval + jhashInitval + 3<<2
	a += iv
	b += iv
	c += iv
	rol := func(x uint32, k uint) uint32 { return x<<k | x>>(32-k) }
	c ^= b
	c -= rol(b, 14)
	a ^= c
	a -= rol(c, 11)
	b ^= a
	b -= rol(a, 25)
	c ^= b
	c -= rol(b, 16)
	a ^= c
	a -= rol(c, 4)
	b ^= a
	b -= rol(a, 14)
	c ^= b
	c -= rol(b, 24)
	return c
}

// nfqueueWords are the words Save and List print, in the order printed.
type nfqueueWords struct{ balance, num, bypass, cpuFanout string }

var (
	nfqueueSave = nfqueueWords{" --queue-balance ", " --queue-num ", " --queue-bypass", " --queue-cpu-fanout"}
	nfqueueList = nfqueueWords{" NFQUEUE balance ", " NFQUEUE num ", " bypass", " cpu-fanout"}
)

// Save prints, in this fixed order, " --queue-num N" or
// " --queue-balance A:B", then " --queue-bypass", then " --queue-cpu-fanout".
func (t *NFQueueTarget) Save(b *strings.Builder) { t.write(b, &nfqueueSave) }

// List prints " NFQUEUE num N" or " NFQUEUE balance A:B", then " bypass",
// then " cpu-fanout" (the same with and without -n).
func (t *NFQueueTarget) List(b *strings.Builder, numeric bool) { t.write(b, &nfqueueList) }

func (t *NFQueueTarget) write(b *strings.Builder, w *nfqueueWords) {
	if t.Total > 1 {
		b.WriteString(w.balance)
		b.WriteString(strconv.Itoa(int(t.Num)))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(t.Num) + int(t.Total) - 1))
	} else {
		b.WriteString(w.num)
		b.WriteString(strconv.Itoa(int(t.Num)))
	}
	if t.Bypass {
		b.WriteString(w.bypass)
	}
	if t.CPUFanout {
		b.WriteString(w.cpuFanout)
	}
}

type nfqueueTargetBuilder struct {
	seen              map[string]bool
	num               uint16
	first, last       uint32
	balance           bool
	bypass, cpuFanout bool
}

func (nb *nfqueueTargetBuilder) Parse(name string, args []string, invert bool) error {
	if invert {
		return fmt.Errorf("option \"--%s\" %w", name, ErrInvert)
	}
	if nb.seen[name] {
		return fmt.Errorf("option \"--%s\" can only be used once", name)
	}
	for _, excl := range [][2]string{{"queue-num", "queue-balance"}, {"queue-balance", "queue-num"}} {
		if name == excl[1] && nb.seen[excl[0]] {
			return fmt.Errorf("option \"--%s\" cannot be used together with \"--%s\"", excl[0], excl[1])
		}
	}
	switch name {
	case "queue-num":
		if len(args) != 1 {
			return fmt.Errorf("option \"--queue-num\" requires an argument")
		}
		v, err := ParseUint(args[0], 0xffff)
		if err != nil {
			return fmt.Errorf("option \"--queue-num\": %w", err)
		}
		nb.num = uint16(v)
	case "queue-balance":
		if len(args) != 1 {
			return fmt.Errorf("option \"--queue-balance\" requires an argument")
		}
		// iptables 1.8.9 reads A:B as a u16 range of its guided parser: an
		// empty A is 0 and an empty B 65535 (so ":" is 0:65535, which the
		// kernel then refuses); both parts are required and A < B.
		v, n, err := parseUintRange(args[0], 0xffff)
		if err != nil {
			return fmt.Errorf("option \"--queue-balance\": %w", err)
		}
		if n != 2 {
			return fmt.Errorf("option \"--queue-balance\": bad range %q", args[0])
		}
		if v[0] >= v[1] {
			return fmt.Errorf("option \"--queue-balance\": %d should be less than %d", v[0], v[1])
		}
		nb.first, nb.last, nb.balance = uint32(v[0]), uint32(v[1]), true
	case "queue-bypass":
		nb.bypass = true
	case "queue-cpu-fanout":
		nb.cpuFanout = true
	default:
		return fmt.Errorf("unknown option \"--%s\"", name)
	}
	if nb.seen == nil {
		nb.seen = map[string]bool{}
	}
	nb.seen[name] = true
	return nil
}

// Build applies iptables' final check (--queue-cpu-fanout needs
// --queue-balance) and the kernel's: the queue count B-A+1 is a u16, so
// 0:65535 wraps to 0 queues and is refused with EINVAL.
func (nb *nfqueueTargetBuilder) Build(r *Rule) (Target, error) {
	if nb.cpuFanout && !nb.balance {
		return nil, fmt.Errorf("option \"--queue-cpu-fanout\" also requires \"--queue-balance\"")
	}
	t := &NFQueueTarget{Num: nb.num, Total: 1, Bypass: nb.bypass, CPUFanout: nb.cpuFanout}
	if nb.balance {
		total := nb.last - nb.first + 1
		if total > 0xffff {
			return nil, fmt.Errorf("--queue-balance %d:%d: number of total queues is 0 (the count %d does not fit 16 bits; kernel: invalid argument)", nb.first, nb.last, total)
		}
		t.Num, t.Total = uint16(nb.first), uint16(total)
	}
	return t, nil
}
