package queue

import (
	"testing"

	"github.com/qtables/qtables/packet"
)

// TestFlowKeyOf: both directions of a flow share a key, other flows (in
// these cases) do not, and ICMP errors stand alone.
func TestFlowKeyOf(t *testing.T) {
	dec, err := packet.NewDecoder(packet.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	key := func(data []byte) (uint64, bool) {
		var v packet.View
		dec.Decode(data, &v)
		return flowKeyOf(&v)
	}
	echoReply := ipv4(1, "10.0.2.2", "10.0.1.2", []byte{0, 0, 0, 0, 0, 1, 0, 1})
	unreach := ipv4(1, "10.0.2.2", "10.0.1.2", append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, udp("10.0.1.2", "10.0.2.2", 4000, 53)...))
	same := []struct {
		name string
		a, b []byte
	}{
		{"udp both ways", udp("10.0.1.2", "10.0.2.2", 4000, 53), udp("10.0.2.2", "10.0.1.2", 53, 4000)},
		{"tcp both ways", tcpSyn("10.0.1.2", "10.0.2.2", 40000, 22), tcpSynAck("10.0.2.2", "10.0.1.2", 22, 40000, 1, 2)},
		{"echo request and reply", icmpEcho("10.0.1.2", "10.0.2.2"), echoReply},
	}
	for _, c := range same {
		ka, aloneA := key(c.a)
		kb, aloneB := key(c.b)
		if ka != kb || aloneA || aloneB {
			t.Errorf("%s: keys %#x %#x (alone %v %v), want one key", c.name, ka, kb, aloneA, aloneB)
		}
	}
	differ := []struct {
		name string
		a, b []byte
	}{
		{"udp other port", udp("10.0.1.2", "10.0.2.2", 4000, 53), udp("10.0.1.2", "10.0.2.2", 4001, 53)},
		{"udp vs tcp", udp("10.0.1.2", "10.0.2.2", 4000, 53), tcpSyn("10.0.1.2", "10.0.2.2", 4000, 53)},
		{"other host", udp("10.0.1.2", "10.0.2.2", 4000, 53), udp("10.0.1.3", "10.0.2.2", 4000, 53)},
	}
	for _, c := range differ {
		if ka, _ := key(c.a); ka == func() uint64 { k, _ := key(c.b); return k }() {
			t.Errorf("%s: one key %#x", c.name, ka)
		}
	}
	if _, alone := key(unreach); !alone {
		t.Error("ICMP port unreachable: not alone")
	}
}

// TestFlowKeySet: add reports new keys once per generation.
func TestFlowKeySet(t *testing.T) {
	var s flowKeySet
	s.reset()
	for i := range uint64(judgeBatch) {
		if !s.add(i << 32) { // all in one home slot: probing
			t.Fatalf("key %d not new", i)
		}
	}
	if s.add(5 << 32) {
		t.Error("key 5 added twice")
	}
	s.reset()
	if !s.add(5 << 32) {
		t.Error("key 5 not new after reset")
	}
}
