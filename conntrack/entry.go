package conntrack

import (
	"strconv"
	"time"
	"unsafe"
)

// Dir is the direction of a packet relative to its connection.
type Dir uint8

const (
	DirOriginal Dir = 0 // IP_CT_DIR_ORIGINAL: same direction as the first packet
	DirReply    Dir = 1 // IP_CT_DIR_REPLY
)

func (d Dir) String() string {
	if d == DirReply {
		return "REPLY"
	}
	return "ORIGINAL"
}

// CtInfo is the per-packet conntrack state that -m state and -m conntrack
// test: the kernel's ip_conntrack_info reduced to the state names (the
// direction is in Result.Dir). The zero value is CtInvalid: a packet with no
// connection.
type CtInfo uint8

const (
	// CtInvalid: the packet is not associated with any connection (the
	// tracker rejected it, or could not or would not create one).
	CtInvalid CtInfo = iota
	// CtNew: the original direction of a connection that has seen no reply.
	CtNew
	// CtEstablished: a reply, or the original direction after a reply.
	CtEstablished
	// CtRelated: an ICMP error about a tracked connection.
	CtRelated
	// CtUntracked: never returned by Track; the caller sets it for packets
	// that a raw-table NOTRACK / CT --notrack exempted from tracking.
	CtUntracked
)

var ctInfoNames = [...]string{"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"}

func (c CtInfo) String() string {
	if int(c) < len(ctInfoNames) {
		return ctInfoNames[c]
	}
	return "CtInfo(" + strconv.Itoa(int(c)) + ")"
}

// Status is the connection's status bit set (enum ip_conntrack_status); the
// bit values are the kernel's, so --ctstatus masks apply unchanged.
type Status uint32

const (
	StatusExpected     Status = 1 << 0 // created from an expectation (never, here: no helpers)
	StatusSeenReply    Status = 1 << 1 // packets seen in both directions
	StatusAssured      Status = 1 << 2 // exempt from early drop
	StatusConfirmed    Status = 1 << 3 // in the table (its first packet was accepted)
	StatusSrcNAT       Status = 1 << 4 // never set: qtables does no NAT
	StatusDstNAT       Status = 1 << 5 // never set
	StatusDying        Status = 1 << 9 // removed from the table
	StatusFixedTimeout Status = 1 << 10
)

// TCPState is the TCP tracker's state (enum tcp_conntrack).
type TCPState uint8

const (
	TCPNone TCPState = iota
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	TCPSynSent2
	tcpNumStates
)

var tcpStateNames = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED",
	"FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

// String returns the name conntrack -L prints.
func (s TCPState) String() string {
	if int(s) < len(tcpStateNames) {
		return tcpStateNames[s]
	}
	return "TCPState(" + strconv.Itoa(int(s)) + ")"
}

// Labels are the 128 conntrack label bits (connlabel), bit i being label i.
type Labels [2]uint64

// Has reports whether label bit i (0..127) is set.
func (l Labels) Has(i uint) bool { return i < 128 && l[i/64]&(1<<(i%64)) != 0 }

// With returns l with bit i set.
func (l Labels) With(i uint) Labels {
	if i < 128 {
		l[i/64] |= 1 << (i % 64)
	}
	return l
}

// L7 is a fixed slot reserved for a later application-layer classifier, so
// that its results ride in the entry without growing it or allocating: ID
// names the classification (0 = none yet; the classifier defines the
// values) and Data is four bytes of classifier state (e.g. bytes inspected
// so far, a verdict, a sub-protocol). The tracker never interprets or
// clears it.
type L7 struct {
	ID   uint32
	Data [4]byte
}

// tcpDirState is what the TCP window tracker keeps per direction
// (struct ip_ct_tcp_state).
type tcpDirState struct {
	end    uint32 // max of seq + len seen from this side
	maxEnd uint32 // max of ack + max(win, 1) seen from the other side
	maxWin uint32 // max window advertised by this side
	maxAck uint32 // max ack sent by this side
	scale  uint8  // window scale factor
	flags  uint8  // tcpFlag* bits
}

// tcpConn is the TCP tracker's per-connection state (struct ip_ct_tcp).
type tcpConn struct {
	seen      [2]tcpDirState
	lastSeq   uint32
	lastAck   uint32
	lastEnd   uint32
	lastWin   uint16
	state     TCPState
	lastDir   uint8
	lastIndex uint8
	lastWScal uint8
	lastFlags uint8
	retrans   uint8
}

// tcpSlot is a connection's TCP tracker state padded to one cache line.
type tcpSlot struct {
	tcpConn
	_ [64 - unsafe.Sizeof(tcpConn{})]byte
}

// flow is the part of a connection that every packet reads or writes:
// exactly 128 bytes, kept 128-byte aligned in the slab (see shard.go), so
// that a packet of a flow touches one aligned pair of cache lines, which
// the CPU fetches as one (its adjacent-line prefetcher completes the
// pair). TCP connections keep their window tracking state in a tcpSlot
// next to it, and the L7 slot lives apart (read only when statusL7 says
// it was set).
//
// There is no reply tuple: with no NAT it is always the original's
// inverse (nf_ct_invert_tuple), which lookups compare against without
// building it.
type flow struct {
	orig Tuple // 38 bytes, then 2 of padding

	created  int64 // Unix ns of the first packet
	lastSeen int64 // Unix ns of the last packet accounted
	// expires is the Unix ns deadline once confirmed; before that, as in
	// the kernel, it holds the timeout relative to confirmation.
	expires int64

	packets [2]uint64
	bytes   [2]uint64

	// status also carries the private bits statusInUse and statusL7.
	status Status
	mark   uint32

	// Slab bookkeeping, meaningless in copies.
	gen  uint32 // bumped on every free, so stale Refs fail
	next uint32 // free-list link (index+1), 0 = end

	labels Labels
}

// The layout above is what the per-packet cost rests on: fail to compile
// if it ever stops being two cache lines, or the TCP slot one.
var (
	_ [unsafe.Sizeof(flow{}) - 128]struct{}
	_ [128 - unsafe.Sizeof(flow{})]struct{}
	_ [unsafe.Sizeof(tcpSlot{}) - 64]struct{}
	_ [64 - unsafe.Sizeof(tcpSlot{})]struct{}
)

// Entry is one tracked connection, as the table hands it out. The table
// stores connections in parts (see flow); an Entry is a copy of all of it
// that the accessors read, taken under the shard lock: reading it needs no
// synchronisation and it does not change when the table does. It holds no
// pointers.
type Entry struct {
	flow
	l7       L7
	tcpState TCPState
}

// Private status bits, never reported by Status: statusInUse marks an
// allocated slab entry, statusL7 one whose L7 slot was set.
const (
	statusInUse   Status = 1 << 31
	statusL7      Status = 1 << 30
	statusPrivate        = statusInUse | statusL7
)

func (e *flow) inUse() bool { return e.status&statusInUse != 0 }

// tuple returns the tuple of direction d.
func (e *flow) tuple(d Dir) Tuple {
	if d == DirReply {
		inv, _ := e.orig.Invert()
		return inv
	}
	return e.orig
}

// Orig and Reply return the connection's two tuples.
func (e *Entry) Orig() Tuple  { return e.orig }
func (e *Entry) Reply() Tuple { return e.tuple(DirReply) }

// Tuple returns the tuple of direction d.
func (e *Entry) Tuple(d Dir) Tuple { return e.tuple(d) }

// Proto returns the transport protocol number of the connection.
func (e *Entry) Proto() uint8 { return e.orig.Proto }

// Status returns the status bits.
func (e *Entry) Status() Status { return e.status &^ statusPrivate }

// Confirmed reports whether the entry is in the table.
func (e *Entry) Confirmed() bool { return e.status&StatusConfirmed != 0 }

// TCPState returns the TCP state (TCPNone for other protocols).
func (e *Entry) TCPState() TCPState { return e.tcpState }

// Mark returns the connection mark (ct mark).
func (e *Entry) Mark() uint32 { return e.mark }

// Labels returns the connection label bits.
func (e *Entry) Labels() Labels { return e.labels }

// L7 returns the application-layer slot.
func (e *Entry) L7() L7 { return e.l7 }

// Created returns the time of the connection's first packet.
func (e *Entry) Created() time.Time { return time.Unix(0, e.created) }

// LastSeen returns the time of the last packet that refreshed the entry.
func (e *Entry) LastSeen() time.Time { return time.Unix(0, e.lastSeen) }

// Expires returns the time at which the entry times out; zero for an
// unconfirmed entry, whose timer does not run yet.
func (e *Entry) Expires() time.Time {
	if !e.Confirmed() {
		return time.Time{}
	}
	return time.Unix(0, e.expires)
}

// Timeout returns the remaining lifetime at now, never negative: what
// nf_ct_expires computes and --ctexpire and conntrack -L show (in whole
// seconds, rounded down). As in the kernel it is 0 for an unconfirmed
// entry, that is, during the first packet's traversal.
func (e *Entry) Timeout(now time.Time) time.Duration {
	if !e.Confirmed() {
		return 0
	}
	if d := e.expires - now.UnixNano(); d > 0 {
		return time.Duration(d)
	}
	return 0
}

// Packets and Bytes return the accounting counters of direction d: packets
// the tracker accepted and their IP lengths (the kernel's nf_conn_acct).
func (e *Entry) Packets(d Dir) uint64 { return e.packets[d&1] }
func (e *Entry) Bytes(d Dir) uint64   { return e.bytes[d&1] }

// protoName is the name conntrack -L prints in the first column.
func protoName(p uint8) string {
	switch p {
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMP:
		return "icmp"
	case protoUDPLite:
		return "udplite"
	case protoDCCP:
		return "dccp"
	case protoGRE:
		return "gre"
	case protoSCTP:
		return "sctp"
	}
	return "unknown"
}

// AppendConntrackL appends the entry as one line of `conntrack -L` output
// (conntrack-tools 1.4 default format, with accounting enabled), without
// the newline:
//
//	tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 packets=3 bytes=164 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 packets=2 bytes=112 [ASSURED] mark=0 use=1
//
// The timeout is the remaining lifetime at now in whole seconds. The
// layout was checked against conntrack v1.4.7 listing a 6.x kernel's table.
func (e *Entry) AppendConntrackL(b []byte, now time.Time) []byte {
	p := e.orig.Proto
	start := len(b)
	b = append(b, protoName(p)...)
	for len(b)-start < 8 {
		b = append(b, ' ')
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(p), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(e.Timeout(now)/time.Second), 10)
	b = append(b, ' ')
	if p == protoTCP {
		b = append(b, e.tcpState.String()...)
		b = append(b, ' ')
	}
	b = appendTuple(b, &e.orig)
	b = appendCounters(b, e.packets[0], e.bytes[0])
	if e.status&StatusSeenReply == 0 {
		b = append(b, "[UNREPLIED] "...)
	}
	reply := e.Reply()
	b = appendTuple(b, &reply)
	b = appendCounters(b, e.packets[1], e.bytes[1])
	if e.status&StatusAssured != 0 {
		b = append(b, "[ASSURED] "...)
	}
	b = append(b, "mark="...)
	b = strconv.AppendUint(b, uint64(e.mark), 10)
	b = append(b, " use=1"...)
	return b
}

// Format returns the conntrack -L line of the entry (see AppendConntrackL).
func (e *Entry) Format(now time.Time) string {
	return string(e.AppendConntrackL(make([]byte, 0, 256), now))
}

func appendTuple(b []byte, t *Tuple) []byte {
	b = append(b, "src="...)
	b = t.SrcAddr().AppendTo(b)
	b = append(b, " dst="...)
	b = t.DstAddr().AppendTo(b)
	b = append(b, ' ')
	switch {
	case t.HasPorts():
		b = append(b, "sport="...)
		b = strconv.AppendUint(b, uint64(t.SrcPort), 10)
		b = append(b, " dport="...)
		b = strconv.AppendUint(b, uint64(t.DstPort), 10)
		b = append(b, ' ')
	case t.Proto == protoICMP:
		b = append(b, "type="...)
		b = strconv.AppendUint(b, uint64(t.ICMPType()), 10)
		b = append(b, " code="...)
		b = strconv.AppendUint(b, uint64(t.ICMPCode()), 10)
		b = append(b, " id="...)
		b = strconv.AppendUint(b, uint64(t.ICMPID()), 10)
		b = append(b, ' ')
	}
	return b
}

func appendCounters(b []byte, packets, bytes uint64) []byte {
	b = append(b, "packets="...)
	b = strconv.AppendUint(b, packets, 10)
	b = append(b, " bytes="...)
	b = strconv.AppendUint(b, bytes, 10)
	return append(b, ' ')
}
