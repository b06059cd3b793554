package queue

import "github.com/qtables/qtables/packet"

// flowKeyOf returns a key that is the same for every packet a flow table
// entry can hold, for Judge.Track's segments: FlowHash, which is the same
// for both directions. Different flows may share a key (ICMP queries of
// one pair of hosts all do): that only ends a segment early. alone
// reports a packet that must start a segment of its own: an ICMP error or
// unknown ICMP type, which the table resolves through another flow.
func flowKeyOf(v *packet.View) (key uint64, alone bool) {
	if v.Proto == packet.ProtoICMP {
		switch v.ICMPType {
		case 0, 8, 13, 14, 15, 16, 17, 18: // queries and their replies
		default:
			return 0, true
		}
	}
	return FlowHash(v.Network), false
}

// flowKeySet is the keys of one segment: a tiny open-addressing set,
// emptied in O(1) by a generation stamp.
type flowKeySet struct {
	gen   uint32
	slots [4 * judgeBatch]struct {
		key uint64
		gen uint32
	}
}

func (s *flowKeySet) reset() {
	s.gen++
	if s.gen == 0 { // wrapped: stale stamps could match again
		s.slots = [len(s.slots)]struct {
			key uint64
			gen uint32
		}{}
		s.gen = 1
	}
}

// add adds k and reports whether it was new.
func (s *flowKeySet) add(k uint64) bool {
	const mask = len(s.slots) - 1
	for i := int(k>>32) & mask; ; i = (i + 1) & mask {
		sl := &s.slots[i]
		if sl.gen != s.gen {
			sl.key, sl.gen = k, s.gen
			return true
		}
		if sl.key == k {
			return false
		}
	}
}
