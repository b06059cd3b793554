package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/matchers"
)

// verdictMsg is one decoded verdict message.
type verdictMsg struct {
	batch    bool
	id       uint32
	verdict  uint32
	mark     uint32
	withMark bool
}

func decodeVerdicts(t *testing.T, b []byte) []verdictMsg {
	t.Helper()
	var out []verdictMsg
	forEachMsg(b, func(typ uint16, _ uint32, body []byte) {
		if typ != nfqnlMsgVerdict && typ != nfqnlMsgBatch {
			t.Fatalf("message type %#x", typ)
		}
		m := verdictMsg{batch: typ == nfqnlMsgBatch}
		a := body[4:]
		for len(a) >= 4 {
			l := int(binary.NativeEndian.Uint16(a))
			switch binary.NativeEndian.Uint16(a[2:]) {
			case nfqaVerdictHdr:
				m.verdict, m.id = binary.BigEndian.Uint32(a[4:]), binary.BigEndian.Uint32(a[8:])
			case nfqaMark:
				m.mark, m.withMark = binary.BigEndian.Uint32(a[4:]), true
			}
			a = a[nlAlign(l):]
		}
		if binary.BigEndian.Uint16(body[2:]) != 7 {
			t.Errorf("queue number %d", binary.BigEndian.Uint16(body[2:]))
		}
		out = append(out, m)
	})
	return out
}

// In order, runs of equal verdicts become one batch verdict for the run's
// last id; a run of one stays a plain verdict; a mark change breaks a run.
func TestVerdictBatchOrdered(t *testing.T) {
	vb := newVerdictBatch(&nfqConn{num: 7}, true)
	for _, v := range []struct {
		id       uint32
		verdict  int
		mark     uint32
		withMark bool
	}{
		{1, nfAccept, 0, false}, {2, nfAccept, 0, false}, {3, nfAccept, 0, false},
		{4, nfDrop, 0, false},
		{5, nfAccept, 0x50, true}, {6, nfAccept, 0x50, true},
		{7, nfAccept, 0x51, true},
		{8, nfAccept, 0, false},
	} {
		vb.Verdict(v.id, v.verdict, v.mark, v.withMark)
	}
	vb.endRun()
	got := decodeVerdicts(t, vb.buf)
	want := []verdictMsg{
		{batch: true, id: 3, verdict: nfAccept},
		{id: 4, verdict: nfDrop},
		{batch: true, id: 6, verdict: nfAccept, mark: 0x50, withMark: true},
		{id: 7, verdict: nfAccept, mark: 0x51, withMark: true},
		{id: 8, verdict: nfAccept},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("message %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// Unordered (pool workers), every packet gets its own message.
func TestVerdictBatchUnordered(t *testing.T) {
	vb := newVerdictBatch(&nfqConn{num: 7}, false)
	vb.Verdict(9, nfAccept, 0, false)
	vb.Verdict(5, nfAccept, 0, false)
	vb.Verdict(6, nfRepeat, 0x40000000, true)
	got := decodeVerdicts(t, vb.buf)
	if len(got) != 3 || got[0] != (verdictMsg{id: 9, verdict: nfAccept}) || got[1].id != 5 ||
		got[2] != (verdictMsg{id: 6, verdict: nfRepeat, mark: 0x40000000, withMark: true}) {
		t.Errorf("%+v", got)
	}
}

// packetMsg builds an NFQNL_MSG_PACKET as the kernel sends it.
func packetMsg(id uint32, hook uint8, payload []byte, mark uint32) []byte {
	hdr := make([]byte, 7)
	binary.BigEndian.PutUint32(hdr, id)
	binary.BigEndian.PutUint16(hdr[4:], 0x0800)
	hdr[6] = hook
	hw := make([]byte, 12)
	binary.BigEndian.PutUint16(hw, 6)
	copy(hw[4:], []byte{2, 0, 0, 0, 0, 9})
	return nlmsg(nfqnlMsgPacket, 0, 0, 0,
		nlattr(nfqaPacketHdr, hdr), nlattr(nfqaMark, be32(mark)), nlattr(nfqaInDev, be32(3)),
		nlattr(nfqaHwAddr, hw), nlattr(nfqaSkbInfo, be32(skbCsumNotVerified)), nlattr(nfqaPayload, payload))
}

func TestNFQPacketParse(t *testing.T) {
	pl := tcpSyn("10.0.1.2", "10.0.2.2", 1, 80)
	msg := packetMsg(42, uint8(matchers.HookForward), pl, 0x77)
	var p nfqPacket
	if !p.parse(msg[unix.NLMSG_HDRLEN:]) {
		t.Fatal("no packet header")
	}
	if p.id != 42 || p.hook != uint8(matchers.HookForward) || p.hwProto != 0x0800 || p.mark != 0x77 || p.in != 3 ||
		!p.hasHw || p.hw != [6]byte{2, 0, 0, 0, 0, 9} || p.skbInfo != skbCsumNotVerified || string(p.payload) != string(pl) {
		t.Errorf("%+v", p)
	}
	// A truncated attribute ends the parse without reading past the end.
	if p.parse(msg[unix.NLMSG_HDRLEN : unix.NLMSG_HDRLEN+10]) {
		t.Error("a message cut inside the packet header parsed")
	}
}

// BenchmarkReadBatch: parsing a received batch, judging every packet
// through 100 rules and collecting the verdicts allocates nothing.
func BenchmarkReadBatch(b *testing.B) {
	var rules = "*filter\n:FORWARD DROP [0:0]\n"
	for i := 0; i < 99; i++ {
		rules += "-A FORWARD -p udp -m udp --dport " + strconv.Itoa(10000+i) + " -j DROP\n"
	}
	rules += "-A FORWARD -p udp -j ACCEPT\nCOMMIT\n"
	d := testDaemon(b, rules, io.Discard, &bytes.Buffer{})
	r := &reader{c: &nfqConn{num: 0}, w: d.newWorker()}
	vb := newVerdictBatch(r.c, true)
	var batch [][]byte
	for i := 0; i < recvBatch; i++ {
		batch = append(batch, packetMsg(uint32(i+1), uint8(matchers.HookForward), udp("10.0.1.2", "10.0.2.2", 5000, 53), 0))
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, m := range batch {
			d.readMsgs(context.Background(), r, vb, m, now)
		}
		vb.endRun()
		vb.buf = vb.buf[:0]
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*recvBatch), "ns/packet")
}
