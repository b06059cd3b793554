package conntrack

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
)

// Client 192.0.2.1:40000 talks to server 198.51.100.2:80 with initial
// sequence numbers 1000 (client) and 5000 (server).
const (
	cPort = 40000
	sPort = 80
)

// step is one packet of a TCP scenario and what the tracker must decide.
type step struct {
	srv      bool // sent by the server (else by the client)
	flags    string
	seq, ack uint32
	data     int
	win      uint16
	adv      time.Duration // clock advance before the packet
	opts     []layers.TCPOption
	drop     bool // the rule set drops the packet: Discard instead of Confirm

	info    CtInfo
	dir     Dir
	reason  Reason   // for CtInvalid
	state   TCPState // connection state after the packet (when it has one)
	timeout time.Duration
	assured bool
	packets [2]uint64 // accounted packets after the packet; -1s skip (see check)
	gone    bool      // no entry for the flow afterwards
}

func (st step) frame(tb testing.TB) []byte {
	s := seg{src: ipClient, dst: ipServer, sport: cPort, dport: sPort,
		flags: st.flags, seq: st.seq, ack: st.ack, data: st.data, win: st.win, opts: st.opts}
	if st.srv {
		s.src, s.dst, s.sport, s.dport = ipServer, ipClient, sPort, cPort
	}
	return tcpFrame(tb, s)
}

var clientTuple = TupleFrom(addr(ipClient), addr(ipServer), 6, cPort, sPort)

func runSteps(t *testing.T, cfg Config, steps []step) *harness {
	t.Helper()
	h := newHarness(t, cfg)
	for i, st := range steps {
		h.advance(st.adv)
		r := h.tab.Track(decode(t, st.frame(t)), h.now)
		if r.HasEntry() && !r.Entry.Confirmed() {
			if st.drop {
				r.Discard()
			} else if !r.Confirm(h.now) {
				t.Fatalf("step %d: confirm failed", i)
			}
		}
		checkInvariants(t, h.tab)
		if r.Info != st.info || (r.Info != CtInvalid && r.Dir != st.dir) {
			t.Fatalf("step %d (%s): got %v, want %v/%v", i, st.flags, r, st.info, st.dir)
		}
		if st.info == CtInvalid {
			if r.HasEntry() {
				t.Fatalf("step %d: INVALID packet has an entry", i)
			}
			if st.reason != ReasonNone && r.Reason != st.reason {
				t.Fatalf("step %d: reason %q, want %q", i, r.Reason, st.reason)
			}
		}
		e, _, ok := h.tab.Lookup(clientTuple, h.now)
		if st.gone {
			if ok {
				t.Fatalf("step %d: entry still present: %s", i, e.Format(h.now))
			}
			continue
		}
		if st.state == TCPNone {
			continue // no expectation on the entry
		}
		if !ok {
			t.Fatalf("step %d: no entry", i)
		}
		if e.TCPState() != st.state {
			t.Fatalf("step %d (%s): state %v, want %v", i, st.flags, e.TCPState(), st.state)
		}
		if st.timeout != 0 && e.Timeout(h.now) != st.timeout {
			t.Fatalf("step %d (%s): timeout %v, want %v", i, st.flags, e.Timeout(h.now), st.timeout)
		}
		if got := e.Status()&StatusAssured != 0; got != st.assured {
			t.Fatalf("step %d (%s): assured %v, want %v", i, st.flags, got, st.assured)
		}
		if st.packets != [2]uint64{} && (e.Packets(DirOriginal) != st.packets[0] || e.Packets(DirReply) != st.packets[1]) {
			t.Fatalf("step %d: packets %d/%d, want %v", i, e.Packets(DirOriginal), e.Packets(DirReply), st.packets)
		}
	}
	return h
}

const (
	day = 24 * time.Hour
	sec = time.Second
)

// handshake is the three-way handshake; every scenario below starts with
// it unless it tests the handshake itself. Expected values follow the
// kernel's tables (xtables-semantics §7.4, §7.6).
var handshake = []step{
	{flags: "S", seq: 1000, info: CtNew, state: TCPSynSent, timeout: 120 * sec},
	{srv: true, flags: "SA", seq: 5000, ack: 1001, info: CtEstablished, dir: DirReply, state: TCPSynRecv, timeout: 60 * sec},
	{flags: "A", seq: 1001, ack: 5001, info: CtEstablished, state: TCPEstablished, timeout: 5 * day, assured: true},
}

func with(prefix []step, rest ...step) []step {
	return append(append([]step(nil), prefix...), rest...)
}

func TestTCPScenarios(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"handshake data and FIN close", Config{}, with(handshake,
			step{flags: "PA", seq: 1001, ack: 5001, data: 100, info: CtEstablished, state: TCPEstablished,
				timeout: 300 * sec, assured: true, packets: [2]uint64{3, 1}}, // unacknowledged data
			step{srv: true, flags: "A", seq: 5001, ack: 1101, info: CtEstablished, dir: DirReply,
				state: TCPEstablished, timeout: 5 * day, assured: true},
			step{flags: "FA", seq: 1101, ack: 5001, info: CtEstablished, state: TCPFinWait, timeout: 120 * sec, assured: true},
			step{srv: true, flags: "A", seq: 5001, ack: 1102, info: CtEstablished, dir: DirReply, state: TCPCloseWait, timeout: 60 * sec, assured: true},
			step{srv: true, flags: "FA", seq: 5001, ack: 1102, info: CtEstablished, dir: DirReply, state: TCPLastAck, timeout: 30 * sec, assured: true},
			step{flags: "A", seq: 1102, ack: 5002, info: CtEstablished, state: TCPTimeWait, timeout: 120 * sec, assured: true,
				packets: [2]uint64{5, 4}},
		)},
		{"SYN retransmitted: NEW again, not counted, timeout not renewed", Config{}, []step{
			{flags: "S", seq: 1000, info: CtNew, state: TCPSynSent, timeout: 120 * sec, packets: [2]uint64{1, 0}},
			{adv: 3 * sec, flags: "S", seq: 1000, info: CtNew, state: TCPSynSent, timeout: 117 * sec, packets: [2]uint64{1, 0}},
			{adv: 6 * sec, flags: "S", seq: 1000, info: CtNew, state: TCPSynSent, timeout: 111 * sec},
			{srv: true, flags: "SA", seq: 5000, ack: 1001, info: CtEstablished, dir: DirReply, state: TCPSynRecv, timeout: 60 * sec, packets: [2]uint64{1, 1}},
		}},
		{"first SYN dropped by the rules: the next one is NEW on a fresh entry", Config{}, []step{
			{flags: "S", seq: 1000, info: CtNew, drop: true, gone: true},
			{flags: "S", seq: 1000, info: CtNew, state: TCPSynSent, packets: [2]uint64{1, 0}},
		}},
		{"RST answering the SYN deletes the connection", Config{}, []step{
			{flags: "S", seq: 1000, info: CtNew, state: TCPSynSent},
			{srv: true, flags: "RA", seq: 0, ack: 1001, info: CtEstablished, dir: DirReply, gone: true},
			// The next client packet finds nothing: a bare ACK is picked up.
			{flags: "A", seq: 1001, ack: 5001, info: CtNew, state: TCPEstablished, timeout: 300 * sec},
		}},
		{"mid-stream pickup (tcp_loose=1)", Config{}, []step{
			{flags: "A", seq: 1001, ack: 5001, info: CtNew, state: TCPEstablished, timeout: 300 * sec},
			{srv: true, flags: "A", seq: 5001, ack: 1001, info: CtEstablished, dir: DirReply, state: TCPEstablished, timeout: 300 * sec},
			{flags: "PA", seq: 1001, ack: 5001, data: 10, info: CtEstablished, state: TCPEstablished, timeout: 300 * sec, assured: true},
			{srv: true, flags: "A", seq: 5001, ack: 1011, info: CtEstablished, dir: DirReply, state: TCPEstablished, timeout: 5 * day, assured: true},
		}},
		{"no pickup (tcp_loose=0)", Config{TCPNoPickup: true}, []step{
			{flags: "A", seq: 1001, ack: 5001, info: CtInvalid, reason: ReasonTCPNew, gone: true},
			{flags: "PA", seq: 1001, ack: 5001, data: 5, info: CtInvalid, reason: ReasonTCPNew, gone: true},
			{flags: "S", seq: 1000, info: CtNew, state: TCPSynSent},
		}},
		{"packets that cannot start a connection", Config{}, []step{
			{flags: "SA", seq: 1000, ack: 1, info: CtInvalid, reason: ReasonTCPNew, gone: true},
			{flags: "FA", seq: 1000, ack: 1, info: CtInvalid, reason: ReasonTCPNew, gone: true},
			{flags: "R", seq: 1000, info: CtInvalid, reason: ReasonTCPNew, gone: true},
			{flags: "RA", seq: 1000, ack: 1, info: CtInvalid, reason: ReasonTCPNew, gone: true},
		}},
		{"impossible flag combinations, new and established", Config{}, with([]step{
			{flags: "SF", seq: 1000, info: CtInvalid, reason: ReasonTCPFlags, gone: true},
			{flags: "", seq: 1000, info: CtInvalid, reason: ReasonTCPFlags, gone: true},
			{flags: "F", seq: 1000, info: CtInvalid, reason: ReasonTCPFlags, gone: true},
			{flags: "FSRPAU", seq: 1000, info: CtInvalid, reason: ReasonTCPFlags, gone: true},
			{flags: "SR", seq: 1000, info: CtInvalid, reason: ReasonTCPFlags, gone: true},
			{flags: "U", seq: 1000, info: CtInvalid, reason: ReasonTCPFlags, gone: true},
		}, with(handshake,
			step{flags: "SF", seq: 1001, info: CtInvalid, reason: ReasonTCPFlags, state: TCPEstablished, timeout: 5 * day, assured: true},
			step{flags: "FPU", seq: 1001, info: CtInvalid, reason: ReasonTCPFlags, state: TCPEstablished, assured: true, packets: [2]uint64{2, 1}},
			// PSH, ECE and CWR never matter.
			step{flags: "SEC", seq: 1001, info: CtEstablished, state: TCPEstablished, assured: true},
		)...)},
		{"SYN in ESTABLISHED is ignored", Config{}, with(handshake,
			step{adv: sec, flags: "S", seq: 77777, info: CtEstablished, state: TCPEstablished,
				timeout: 5*day - sec, assured: true, packets: [2]uint64{2, 1}},
		)},
		{"TIME_WAIT reopened by a new SYN", Config{}, with(handshake,
			step{flags: "FA", seq: 1001, ack: 5001, info: CtEstablished, state: TCPFinWait, assured: true},
			step{srv: true, flags: "FA", seq: 5001, ack: 1002, info: CtEstablished, dir: DirReply, state: TCPLastAck, assured: true},
			step{flags: "A", seq: 1002, ack: 5002, info: CtEstablished, state: TCPTimeWait, timeout: 120 * sec, assured: true},
			step{adv: 10 * sec, flags: "S", seq: 90000, info: CtNew, state: TCPSynSent, timeout: 120 * sec, packets: [2]uint64{1, 0}},
			step{srv: true, flags: "SA", seq: 70000, ack: 90001, info: CtEstablished, dir: DirReply, state: TCPSynRecv},
		)},
		{"RST in ESTABLISHED closes", Config{}, with(handshake,
			step{srv: true, flags: "R", seq: 5001, info: CtEstablished, dir: DirReply, state: TCPClose, timeout: 10 * sec, assured: true},
		)},
		{"RST below the window is INVALID", Config{}, with(handshake,
			step{srv: true, flags: "A", seq: 5001, ack: 1001, info: CtEstablished, dir: DirReply, state: TCPEstablished, assured: true},
			step{flags: "R", seq: 900, info: CtInvalid, reason: ReasonTCPRst, state: TCPEstablished, assured: true},
		)},
		{"RST below the window accepted with tcp_ignore_invalid_rst", Config{TCPIgnoreInvalidRST: true}, with(handshake,
			step{srv: true, flags: "A", seq: 5001, ack: 1001, info: CtEstablished, dir: DirReply, state: TCPEstablished, assured: true},
			// Not the exact sequence number: the kernel keeps the state
			// (a challenge ACK may follow) but the timeout becomes CLOSE's.
			step{flags: "R", seq: 900, info: CtEstablished, state: TCPEstablished, timeout: 10 * sec, assured: true},
		)},
		{"data beyond the receive window", Config{}, with(handshake,
			step{flags: "PA", seq: 1001 + 10_000_000, ack: 5001, data: 10, info: CtInvalid, reason: ReasonTCPWindow,
				state: TCPEstablished, timeout: 5 * day, assured: true, packets: [2]uint64{2, 1}},
		)},
		{"data beyond the receive window, be_liberal", Config{TCPBeLiberal: true}, with(handshake,
			step{flags: "PA", seq: 1001 + 10_000_000, ack: 5001, data: 10, info: CtEstablished,
				state: TCPEstablished, assured: true, packets: [2]uint64{3, 1}},
		)},
		{"ACK for data never sent", Config{}, with(handshake,
			step{flags: "A", seq: 1001, ack: 5001 + 100000, info: CtInvalid, reason: ReasonTCPWindow, state: TCPEstablished, assured: true},
		)},
		{"retransmitted data below the window is ignored", Config{}, with(handshake,
			step{flags: "PA", seq: 1001, ack: 5001, data: 1000, info: CtEstablished, state: TCPEstablished, assured: true},
			step{srv: true, flags: "A", seq: 5001, ack: 2001, win: 1000, info: CtEstablished, dir: DirReply, state: TCPEstablished, assured: true},
			// Far below the left edge: neither counted nor INVALID.
			step{flags: "PA", seq: 1001 + (1<<32 - 200_000), ack: 5001, data: 10, info: CtEstablished, state: TCPEstablished, assured: true,
				packets: [2]uint64{3, 2}},
		)},
		{"three duplicate ACKs cap the timeout (tcp_max_retrans)", Config{}, with(handshake,
			// The handshake's ACK was the first; these repeat it exactly.
			step{flags: "A", seq: 1001, ack: 5001, info: CtEstablished, state: TCPEstablished, timeout: 5 * day, assured: true},
			step{flags: "A", seq: 1001, ack: 5001, info: CtEstablished, state: TCPEstablished, timeout: 5 * day, assured: true},
			step{flags: "A", seq: 1001, ack: 5001, info: CtEstablished, state: TCPEstablished, timeout: 300 * sec, assured: true},
			// Any other segment resets the count.
			step{flags: "A", seq: 1001, ack: 5001, win: 1000, info: CtEstablished, state: TCPEstablished, timeout: 5 * day, assured: true},
		)},
		{"zero window caps the timeout", Config{}, with(handshake,
			step{srv: true, flags: "A0", seq: 5001, ack: 1001, info: CtEstablished, dir: DirReply, state: TCPEstablished, timeout: 300 * sec, assured: true},
		)},
		{"simultaneous open", Config{}, []step{
			{flags: "S", seq: 1000, info: CtNew, state: TCPSynSent},
			{srv: true, flags: "S", seq: 5000, info: CtEstablished, dir: DirReply, state: TCPSynSent2, timeout: 120 * sec},
			{flags: "SA", seq: 1000, ack: 5001, info: CtEstablished, state: TCPSynRecv, timeout: 60 * sec},
			{srv: true, flags: "A", seq: 5001, ack: 1001, info: CtEstablished, dir: DirReply, state: TCPEstablished, timeout: 5 * day, assured: true},
		}},
		{"SYN/ACK answering an ignored SYN resynchronises", Config{}, with(handshake,
			// The client restarts with a new ISN; conntrack ignores the SYN
			// (the connection looks established) but notes it.
			step{flags: "S", seq: 90000, info: CtEstablished, state: TCPEstablished, assured: true, packets: [2]uint64{2, 1}},
			// The server answers it: tracker and endpoints are in sync again.
			step{srv: true, flags: "SA", seq: 70000, ack: 90001, info: CtEstablished, dir: DirReply, state: TCPSynRecv, timeout: 60 * sec, assured: true},
			step{flags: "A", seq: 90001, ack: 70001, info: CtEstablished, state: TCPEstablished, timeout: 5 * day, assured: true},
		)},
		{"challenge ACK in LAST_ACK is not the last ACK", Config{}, with(handshake,
			step{flags: "FA", seq: 1001, ack: 5001, info: CtEstablished, state: TCPFinWait, assured: true},
			step{srv: true, flags: "FA", seq: 5001, ack: 1002, info: CtEstablished, dir: DirReply, state: TCPLastAck, assured: true},
			// A new SYN from the client is ignored in LAST_ACK ...
			step{flags: "S", seq: 90000, info: CtEstablished, state: TCPLastAck, assured: true},
			// ... and the server's RFC 5961 challenge ACK leaves the state.
			step{srv: true, flags: "A", seq: 5002, ack: 1002, info: CtEstablished, dir: DirReply, state: TCPLastAck, assured: true},
			// The real last ACK then closes.
			step{flags: "A", seq: 1002, ack: 5002, info: CtEstablished, state: TCPTimeWait, assured: true},
		)},
		{"FIN before the handshake completes is INVALID", Config{}, []step{
			{flags: "S", seq: 1000, info: CtNew, state: TCPSynSent},
			{flags: "FA", seq: 1001, ack: 1, info: CtInvalid, reason: ReasonTCPState, state: TCPSynSent},
			{flags: "A", seq: 1001, ack: 1, info: CtInvalid, reason: ReasonTCPState, state: TCPSynSent},
		}},
		{"window scaling from the handshake", Config{}, []step{
			{flags: "S", seq: 1000, opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}}},
				info: CtNew, state: TCPSynSent},
			{srv: true, flags: "SA", seq: 5000, ack: 1001, opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}}},
				info: CtEstablished, dir: DirReply, state: TCPSynRecv},
			{flags: "A", seq: 1001, ack: 5001, win: 1000, info: CtEstablished, state: TCPEstablished, assured: true},
			// The server may send 1000<<7 = 128000 bytes; 100000 is in window.
			{srv: true, flags: "PA", seq: 5001 + 100000, ack: 1001, data: 10, info: CtEstablished, dir: DirReply, state: TCPEstablished, assured: true},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runSteps(t, c.cfg, c.steps) })
	}
}

// TestTCPTransitionTable checks the state table cell by cell against the
// kernel's (xtables-semantics §7.4, current kernel rows) by driving an entry
// in each state with each packet class, without window checks interfering
// (be_liberal).
func TestTCPTransitionTable(t *testing.T) {
	const IV, IG = sIV, sIG
	want := [2][6][10]TCPState{
		DirOriginal: {
			{sSS, sSS, IG, IG, IG, IG, IG, sSS, sSS, sS2},
			{IV, IV, sSR, IV, IV, IV, IV, IV, IV, sSR},
			{IV, IV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, IV},
			{sES, IV, sES, sES, sCW, sCW, sTW, sTW, sCL, IV},
			{IV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
			{IV, IV, IV, IV, IV, IV, IV, IV, IV, IV},
		},
		DirReply: {
			{IV, sS2, IV, IV, IV, IV, IV, sSS, IV, sS2},
			{IV, sSR, IG, IG, IG, IG, IG, IG, IG, sSR},
			{IV, IV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, IV},
			{IV, IG, sSR, sES, sCW, sCW, sTW, sTW, sCL, IG},
			{IV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
			{IV, IV, IV, IV, IV, IV, IV, IV, IV, IV},
		},
	}
	if tcpTransitions != want {
		t.Fatal("transition table differs from the kernel's")
	}
}

// TestTCPCountersAndBytes checks accounting against IP lengths.
func TestTCPCountersAndBytes(t *testing.T) {
	h := runSteps(t, Config{}, with(handshake,
		step{flags: "PA", seq: 1001, ack: 5001, data: 100, info: CtEstablished, state: TCPEstablished, assured: true},
	))
	e, _, _ := h.tab.Lookup(clientTuple, h.now)
	// 40 (SYN) + 40 (ACK) + 140 (data) from the client, 40 from the server.
	if e.Bytes(DirOriginal) != 220 || e.Bytes(DirReply) != 40 {
		t.Fatalf("bytes %d/%d, want 220/40", e.Bytes(DirOriginal), e.Bytes(DirReply))
	}
	if !e.Created().Equal(t0) || !e.LastSeen().Equal(t0) {
		t.Fatalf("created %v last %v", e.Created(), e.LastSeen())
	}
}

// TestTCPTimeoutExpiry: an idle connection expires at its state's timeout
// and the next packet starts over.
func TestTCPTimeoutExpiry(t *testing.T) {
	h := runSteps(t, Config{Timeouts: Timeouts{TCPSynSent: 5 * sec}}, []step{
		{flags: "S", seq: 1000, info: CtNew, state: TCPSynSent, timeout: 5 * sec},
		{adv: 4 * sec, srv: true, flags: "SA", seq: 5000, ack: 1001, info: CtEstablished, dir: DirReply, state: TCPSynRecv, timeout: 60 * sec},
	})
	// Idle past SYN_RECV's 60 s: the final ACK finds nothing and is picked
	// up as a new connection.
	h.advance(60 * sec)
	r := h.send(tcpFrame(t, seg{src: ipClient, dst: ipServer, sport: cPort, dport: sPort, flags: "A", seq: 1001, ack: 5001}))
	if r.Info != CtNew || r.Entry.TCPState() != TCPEstablished {
		t.Fatalf("after expiry: %v", r)
	}
	if st := h.tab.Stats(); st.Expired != 1 {
		t.Fatalf("expired %d, want 1", st.Expired)
	}
}

// TestTCPMalformedOptions: option lists the kernel's parser gives up on
// (length beyond the list, "silly" lengths below 2, a kind with no length
// byte) end the parse; the packet is tracked normally and no window scale
// is taken from them.
func TestTCPMalformedOptions(t *testing.T) {
	wscale := []layers.TCPOption{{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		{OptionType: layers.TCPOptionKindEndList}}
	for _, patch := range [][]byte{
		{3, 40, 7, 0}, // length beyond the options
		{3, 1, 7, 0},  // silly length
		{3, 0, 7, 0},  // zero length
		{1, 1, 1, 3},  // kind with no length byte
		{5, 2, 7, 0},  // empty SACK
	} {
		h := newHarness(t, Config{})
		syn := tcpFrame(t, seg{src: ipClient, dst: ipServer, sport: cPort, dport: sPort, flags: "S", seq: 1000, opts: wscale})
		copy(syn[40:44], patch)
		synack := tcpFrame(t, seg{src: ipServer, dst: ipClient, sport: sPort, dport: cPort, flags: "SA", seq: 5000, ack: 1001, opts: wscale})
		copy(synack[40:44], patch)
		if r := h.send(syn); r.Info != CtNew {
			t.Fatalf("%v: SYN %v", patch, r)
		}
		if r := h.send(synack); r.Info != CtEstablished {
			t.Fatalf("%v: SYN/ACK %v", patch, r)
		}
		h.send(tcpFrame(t, seg{src: ipClient, dst: ipServer, sport: cPort, dport: sPort, flags: "A", seq: 1001, ack: 5001, win: 1000}))
		// Unscaled, the client offered 1000 bytes: 100000 is out of window.
		r := h.send(tcpFrame(t, seg{src: ipServer, dst: ipClient, sport: sPort, dport: cPort, flags: "PA", seq: 5001 + 100000, ack: 1001, data: 10}))
		if r.Info != CtInvalid || r.Reason != ReasonTCPWindow {
			t.Fatalf("%v: data beyond the unscaled window: %v", patch, r)
		}
	}
}

// TestTCPSack: with SACK permitted on both sides, a selective
// acknowledgement may cover data beyond the cumulative ack (up to what was
// sent); a SACK block beyond the sent data is INVALID like such an ack.
func TestTCPSack(t *testing.T) {
	sackPerm := []layers.TCPOption{{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}}
	sack := func(left, right uint32) []layers.TCPOption {
		d := make([]byte, 8)
		binary.BigEndian.PutUint32(d[0:4], left)
		binary.BigEndian.PutUint32(d[4:8], right)
		return []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindSACK, OptionLength: 10, OptionData: d}}
	}
	runSteps(t, Config{}, []step{
		{flags: "S", seq: 1000, opts: sackPerm, info: CtNew, state: TCPSynSent},
		{srv: true, flags: "SA", seq: 5000, ack: 1001, opts: sackPerm, info: CtEstablished, dir: DirReply, state: TCPSynRecv},
		{flags: "A", seq: 1001, ack: 5001, info: CtEstablished, state: TCPEstablished, assured: true},
		{flags: "PA", seq: 1001, ack: 5001, data: 1000, info: CtEstablished, state: TCPEstablished, assured: true},
		{flags: "PA", seq: 2001, ack: 5001, data: 1000, info: CtEstablished, state: TCPEstablished, assured: true},
		// The first segment was lost: ack 1001, SACK 2001-3001.
		{srv: true, flags: "A", seq: 5001, ack: 1001, opts: sack(2001, 3001), info: CtEstablished, dir: DirReply,
			state: TCPEstablished, assured: true, packets: [2]uint64{4, 2}},
		// A SACK block beyond anything sent.
		{srv: true, flags: "A", seq: 5001, ack: 1001, opts: sack(2001, 9001), info: CtInvalid, reason: ReasonTCPWindow,
			state: TCPEstablished, assured: true, packets: [2]uint64{4, 2}},
	})
}
