package conntrack

import "encoding/binary"

// This file is the TCP tracker, after net/netfilter/nf_conntrack_proto_tcp.c
// (Linux 6.x): the flag validity table, the state transition table, the
// handling of ignored packets, RSTs and reopened connections, and the window
// tracking of tcp_in_window (Guido van Rooij's "Real Stateful TCP Packet
// Filtering in IP Filter", as the kernel adapts it).

// Packet classes (enum tcp_bit_set), the state table's rows.
const (
	tcpSynSet uint8 = iota
	tcpSynAckSet
	tcpFinSet
	tcpAckSet
	tcpRstSet
	tcpNoneSet
)

// Pseudo-states of the transition table.
const (
	sNO = TCPNone
	sSS = TCPSynSent
	sSR = TCPSynRecv
	sES = TCPEstablished
	sFW = TCPFinWait
	sCW = TCPCloseWait
	sLA = TCPLastAck
	sTW = TCPTimeWait
	sCL = TCPClose
	sS2 = TCPSynSent2
	sIV = tcpNumStates     // the packet is invalid in this state
	sIG = tcpNumStates + 1 // ignore the packet: it may be valid, the tracker may be out of sync
)

// tcpTransitions[dir][class][state] is the next state.
var tcpTransitions = [2][6][tcpNumStates]TCPState{
	DirOriginal: {
		//            sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
		tcpSynSet:    {sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2},
		tcpSynAckSet: {sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR},
		tcpFinSet:    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		tcpAckSet:    {sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV},
		tcpRstSet:    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		tcpNoneSet:   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
	DirReply: {
		//            sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
		tcpSynSet:    {sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2},
		tcpSynAckSet: {sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR},
		tcpFinSet:    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		tcpAckSet:    {sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG},
		tcpRstSet:    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		tcpNoneSet:   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
}

// TCP header flag bits.
const (
	thFIN = 0x01
	thSYN = 0x02
	thRST = 0x04
	thPSH = 0x08
	thACK = 0x10
	thURG = 0x20
	thECE = 0x40
	thCWR = 0x80
)

// tcpValidFlags[flags &^ (PSH|ECE|CWR)] reports the flag combinations
// tcp_error accepts.
var tcpValidFlags = [64]bool{
	thSYN:                 true,
	thSYN | thURG:         true,
	thSYN | thACK:         true,
	thRST:                 true,
	thRST | thACK:         true,
	thFIN | thACK:         true,
	thFIN | thACK | thURG: true,
	thACK:                 true,
	thACK | thURG:         true,
}

// Per-direction tracker flags (IP_CT_TCP_FLAG_*), and the two flags only
// kept in tcpConn.lastFlags.
const (
	tcpFlagWindowScale = 0x01
	tcpFlagSackPerm    = 0x02
	tcpFlagCloseInit   = 0x04
	tcpFlagBeLiberal   = 0x08
	tcpFlagDataUnack   = 0x10
	tcpFlagMaxAckSet   = 0x20
	tcpExpChallengeAck = 0x40
	tcpSimultaneous    = 0x80
)

const tcpMaxWScale = 14

// tcpSeg is the parsed TCP header.
type tcpSeg struct {
	seq, ack uint32
	win      uint16
	flags    uint8
	index    uint8
	hdrLen   int
	// end is segment_seq_plus_len: seq + payload length + SYN + FIN.
	end uint32
	// opts are the option bytes, nil when the capture cut them.
	opts []byte
}

func (s *tcpSeg) has(f uint8) bool { return s.flags&f != 0 }

// parse decodes the TCP header and applies tcp_error's checks (the
// checksum is the caller's).
func (s *tcpSeg) parse(l4 []byte, l4len int) Reason {
	if len(l4) < 20 {
		return ReasonTruncated
	}
	s.opts = nil // unless the capture holds them (the pkt may be reused)
	s.hdrLen = int(l4[12]>>4) * 4
	if s.hdrLen < 20 || l4len < s.hdrLen {
		return ReasonTCPHeader
	}
	s.seq = binary.BigEndian.Uint32(l4[4:8])
	s.ack = binary.BigEndian.Uint32(l4[8:12])
	s.flags = l4[13]
	s.win = binary.BigEndian.Uint16(l4[14:16])
	if !tcpValidFlags[s.flags&^(thPSH|thECE|thCWR)&0x3f] {
		return ReasonTCPFlags
	}
	if s.hdrLen <= len(l4) {
		s.opts = l4[20:s.hdrLen]
	}
	s.end = s.seq + uint32(l4len-s.hdrLen)
	if s.has(thSYN) {
		s.end++
	}
	if s.has(thFIN) {
		s.end++
	}
	switch {
	case s.has(thRST):
		s.index = tcpRstSet
	case s.has(thSYN) && s.has(thACK):
		s.index = tcpSynAckSet
	case s.has(thSYN):
		s.index = tcpSynSet
	case s.has(thFIN):
		s.index = tcpFinSet
	case s.has(thACK):
		s.index = tcpAckSet
	default:
		s.index = tcpNoneSet
	}
	return ReasonNone
}

// before and after compare sequence numbers modulo 2^32.
func before(a, b uint32) bool { return int32(a-b) < 0 }
func after(a, b uint32) bool  { return before(b, a) }

// tcpOptions reads the window scale and SACK-permitted options into st
// (tcp_options). Malformed option lists end the parse, never the packet.
func tcpOptions(opts []byte, st *tcpDirState) {
	if len(opts) == 0 {
		return
	}
	st.scale = 0
	st.flags &= tcpFlagBeLiberal
	for i := 0; i < len(opts); {
		switch op := opts[i]; op {
		case 0: // end of list
			return
		case 1: // no-op
			i++
		default:
			if len(opts)-i < 2 {
				return
			}
			size := int(opts[i+1])
			if size < 2 || size > len(opts)-i {
				return
			}
			if op == 4 && size == 2 {
				st.flags |= tcpFlagSackPerm
			} else if op == 3 && size == 3 {
				st.scale = min(opts[i+2], tcpMaxWScale)
				st.flags |= tcpFlagWindowScale
			}
			i += size
		}
	}
}

// tcpSack returns the highest right edge of the SACK blocks in opts that
// lies after ack (tcp_sack), or ack.
func tcpSack(opts []byte, ack uint32) uint32 {
	sack := ack
	// Fast path: only the aligned timestamp option.
	if len(opts) == 12 && opts[0] == 1 && opts[1] == 1 && opts[2] == 8 && opts[3] == 10 {
		return sack
	}
	for i := 0; i < len(opts); {
		switch op := opts[i]; op {
		case 0:
			return sack
		case 1:
			i++
		default:
			if len(opts)-i < 2 {
				return sack
			}
			size := int(opts[i+1])
			if size < 2 || size > len(opts)-i {
				return sack
			}
			if op == 5 && size >= 10 && (size-2)%8 == 0 {
				for j := i + 2; j+8 <= i+size; j += 8 {
					if edge := binary.BigEndian.Uint32(opts[j+4 : j+8]); after(edge, sack) {
						sack = edge
					}
				}
				return sack
			}
			i += size
		}
	}
	return sack
}

// tcpInitSender initialises a direction from a SYN or SYN/ACK
// (tcp_init_sender).
func tcpInitSender(tc *tcpConn, dir Dir, seg *tcpSeg) {
	sender, receiver := &tc.seen[dir], &tc.seen[1-dir]
	sender.end, sender.maxEnd = seg.end, seg.end
	sender.maxWin = max(uint32(seg.win), 1)
	tcpOptions(seg.opts, sender)
	// RFC 1323: scaling applies only if both sides offered it.
	if dir == DirReply && !(sender.flags&tcpFlagWindowScale != 0 && receiver.flags&tcpFlagWindowScale != 0) {
		sender.scale, receiver.scale = 0, 0
	}
}

// window verdicts (enum nf_ct_tcp_action).
type tcpAction uint8

const (
	tcpAccept tcpAction = iota
	tcpIgnore
	tcpInvalid
)

// maxAckWindow is MAXACKWINDOW(sender).
func maxAckWindow(sender *tcpDirState) uint32 { return max(sender.maxWin, 66000) }

// inWindow is tcp_in_window: is the segment within what the receiver can
// accept and does it acknowledge only data that was sent? It updates the
// tracked windows from acceptable segments.
func (t *Table) inWindow(tc *tcpConn, dir Dir, seg *tcpSeg) tcpAction {
	sender, receiver := &tc.seen[dir], &tc.seen[1-dir]
	seq, ack, end := seg.seq, seg.ack, seg.end
	win := uint32(seg.win)
	sack := ack
	if receiver.flags&tcpFlagSackPerm != 0 {
		sack = tcpSack(seg.opts, ack)
	}
	lax := func(a tcpAction) tcpAction {
		if sender.flags&tcpFlagBeLiberal != 0 || t.cfg.TCPBeLiberal {
			return tcpAccept
		}
		return a
	}

	if sender.maxWin == 0 {
		if seg.has(thSYN) {
			// A SYN/ACK answering a SYN, or a SYN from the reply side in a
			// simultaneous open.
			tcpInitSender(tc, dir, seg)
			if !seg.has(thACK) {
				return tcpAccept
			}
		} else {
			// Picked up mid-stream: take what the packet says.
			sender.end = end
			swin := win << sender.scale
			sender.maxWin = max(swin, 1)
			sender.maxEnd = end + sender.maxWin
			if receiver.maxWin == 0 {
				// No traffic seen the other way: let III and IV pass.
				receiver.end, receiver.maxEnd = sack, sack
			} else if sack == receiver.end+1 {
				receiver.end++ // probably answering a keepalive
			}
		}
	} else if seg.has(thSYN) && after(end, sender.end) &&
		(tc.state == TCPSynSent || tc.state == TCPSynRecv) {
		// A reinitialised connection may use higher sequence numbers
		// (RFC 793): start this direction over.
		tcpInitSender(tc, dir, seg)
		if dir == DirReply && !seg.has(thACK) {
			return tcpAccept
		}
	}

	if !seg.has(thACK) {
		ack, sack = receiver.end, receiver.end
	} else if seg.flags&(thACK|thRST) == thACK|thRST && ack == 0 {
		// Broken stacks set ACK on a RST with a zero ack.
		ack, sack = receiver.end, receiver.end
	}
	if seg.has(thRST) && seq == 0 && tc.state == TCPSynSent {
		// A RST answering a SYN.
		seq, end = sender.end, sender.end
	}

	if !before(seq, sender.maxEnd+1) {
		// I. Upper bound for valid data failed.
		overshot := end - sender.maxEnd + 1
		ackOK := after(sack, receiver.end-maxAckWindow(sender)-1)
		inRecvWin := receiver.maxWin != 0 && after(end, sender.end-receiver.maxWin-1)
		if inRecvWin && ackOK && overshot <= receiver.maxWin && before(sack, receiver.end+1) {
			// A sender exceeding the receive window a little: keep
			// track of the data in case the peer acknowledges it.
			sender.end = end
			sender.flags |= tcpFlagDataUnack
			return lax(tcpIgnore)
		}
		return lax(tcpInvalid)
	}
	// III. Upper bound for valid (s)ack: only data that was sent.
	if !before(sack, receiver.end+1) {
		return lax(tcpInvalid)
	}
	// II. Lower bound for valid data: already acknowledged retransmissions.
	if receiver.maxWin != 0 && !after(end, sender.end-receiver.maxWin-1) {
		return lax(tcpIgnore)
	}
	// IV. Lower bound for valid (s)ack: an overly delayed ack.
	if !after(sack, receiver.end-maxAckWindow(sender)-1) {
		return lax(tcpIgnore)
	}

	if !seg.has(thSYN) {
		win <<= sender.scale
	}
	if swin := win + (sack - ack); sender.maxWin < swin {
		sender.maxWin = swin
	}
	if after(end, sender.end) {
		sender.end = end
		sender.flags |= tcpFlagDataUnack
	}
	if seg.has(thACK) {
		if sender.flags&tcpFlagMaxAckSet == 0 {
			sender.maxAck = ack
			sender.flags |= tcpFlagMaxAckSet
		} else if after(ack, sender.maxAck) {
			sender.maxAck = ack
		}
	}
	if receiver.maxWin != 0 && after(end, sender.maxEnd) {
		receiver.maxWin += end - sender.maxEnd
	}
	if after(sack+win, receiver.maxEnd-1) {
		receiver.maxEnd = sack + win
		if win == 0 {
			receiver.maxEnd++
		}
	}
	if ack == receiver.end {
		receiver.flags &^= tcpFlagDataUnack
	}

	// Count retransmissions: the same ACK segment seen again.
	if seg.index == tcpAckSet {
		if tc.lastDir == uint8(dir) && tc.lastSeq == seq && tc.lastAck == ack &&
			tc.lastEnd == end && tc.lastWin == seg.win {
			if tc.retrans < 255 {
				tc.retrans++
			}
		} else {
			tc.lastDir, tc.lastSeq, tc.lastAck, tc.lastEnd, tc.lastWin = uint8(dir), seq, ack, end, seg.win
			tc.retrans = 0
		}
	}
	return tcpAccept
}

// tcpNew is tcp_new: may the packet create a connection, and with what
// initial window state?
func (t *Table) tcpNew(tc *tcpConn, seg *tcpSeg) bool {
	ns := tcpTransitions[DirOriginal][seg.index][TCPNone]
	if ns >= sIV {
		return false
	}
	*tc = tcpConn{}
	s0 := &tc.seen[0]
	s0.end = seg.end
	s0.maxWin = max(uint32(seg.win), 1)
	if ns == TCPSynSent {
		s0.maxEnd = s0.end
		tcpOptions(seg.opts, s0)
	} else {
		if t.cfg.TCPNoPickup {
			return false
		}
		// Mid-stream: assume SACK and check windows liberally, since the
		// window scale negotiated in the handshake is unknown.
		s0.maxEnd = s0.end + s0.maxWin
		s0.flags = tcpFlagSackPerm | tcpFlagBeLiberal
		tc.seen[1].flags = tcpFlagSackPerm | tcpFlagBeLiberal
	}
	tc.lastIndex = tcpNoneSet
	return true
}

// tcpCanEarlyDrop reports the closing states the kernel's gc may evict
// under pressure even when assured.
func tcpCanEarlyDrop(s TCPState) bool {
	switch s {
	case TCPFinWait, TCPLastAck, TCPTimeWait, TCPClose, TCPCloseWait:
		return true
	}
	return false
}

// tcpPacket is nf_conntrack_tcp_packet without the checks tcp_error made at
// parse time.
func (t *Table) tcpPacket(e *flow, tc *tcpConn, dir Dir, p *pkt, now int64, confirmed bool) (verdict, Reason) {
	seg := &p.tcp
	if !confirmed && !t.tcpNew(tc, seg) {
		return vInvalid, ReasonTCPNew
	}
	old := tc.state
	index := seg.index
	ns := tcpTransitions[dir][index][old]
	skipWindow := false

	switch ns {
	case TCPSynSent:
		if old < TCPTimeWait {
			break
		}
		// RFC 1122: a SYN may reopen a connection in TIME_WAIT; also a
		// client that aborted with RST may start over. Forget the old
		// entry and track the SYN as a new connection.
		if (tc.seen[dir].flags|tc.seen[1-dir].flags)&tcpFlagCloseInit != 0 ||
			(tc.lastDir == uint8(dir) && tc.lastIndex == tcpRstSet) {
			return vRepeat, ReasonNone
		}
		fallthrough
	case sIG:
		if index == tcpSynAckSet && tc.lastIndex == tcpSynSet &&
			tc.lastDir != uint8(dir) && seg.ack == tc.lastEnd {
			// This SYN/ACK answers a SYN we ignored: client and server
			// are in sync and we are not. Resynchronise from what we
			// noted about that SYN.
			old, ns = TCPSynSent, TCPSynRecv
			ld := tc.lastDir & 1
			st := &tc.seen[ld]
			st.end, st.maxEnd = tc.lastEnd, tc.lastEnd
			st.maxWin = max(uint32(tc.lastWin), 1)
			st.scale = tc.lastWScal
			tc.lastFlags &^= tcpExpChallengeAck
			st.flags = tc.lastFlags
			r := &tc.seen[dir]
			r.end, r.maxEnd, r.maxWin, r.maxAck, r.scale = 0, 0, 0, 0, 0
			r.flags &= tcpFlagBeLiberal
			break
		}
		tc.lastIndex = index
		tc.lastDir = uint8(dir)
		tc.lastSeq = seg.seq
		tc.lastEnd = seg.end
		tc.lastWin = seg.win
		if index == tcpSynSet && dir == DirOriginal {
			// Note the SYN's options in case the peer answers it.
			var st tcpDirState
			tc.lastFlags, tc.lastWScal = 0, 0
			tcpOptions(seg.opts, &st)
			if st.flags&tcpFlagWindowScale != 0 {
				tc.lastFlags |= tcpFlagWindowScale
				tc.lastWScal = st.scale
			}
			if st.flags&tcpFlagSackPerm != 0 {
				tc.lastFlags |= tcpFlagSackPerm
			}
			// The peer may answer with an RFC 5961 challenge ACK, which
			// in LAST_ACK must not be taken for the final ACK.
			if old == TCPLastAck {
				tc.lastFlags |= tcpExpChallengeAck
			}
		}
		if old == TCPSynSent && index == tcpAckSet && dir == DirReply {
			tc.lastAck = seg.ack // a possible challenge ACK answering the SYN
		}
		return vNoUpdate, ReasonNone
	case sIV:
		return vInvalid, ReasonTCPState
	case TCPTimeWait:
		if old == TCPLastAck && index == tcpAckSet && tc.lastDir != uint8(dir) &&
			tc.lastIndex == tcpSynSet && tc.lastFlags&tcpExpChallengeAck != 0 {
			// The challenge ACK answering an ignored SYN, not the last ACK.
			tc.lastFlags &^= tcpExpChallengeAck
			return vNoUpdate, ReasonNone
		}
	case TCPSynSent2:
		// The table cannot express simultaneous open by itself.
		tc.lastFlags |= tcpSimultaneous
	case TCPSynRecv:
		if dir == DirReply && index == tcpAckSet && tc.lastFlags&tcpSimultaneous != 0 {
			ns = TCPEstablished
		}
	case TCPClose:
		if index != tcpRstSet {
			break
		}
		var invalid bool
		ns, skipWindow, invalid = t.tcpRst(e, tc, dir, seg, old)
		if invalid {
			return vInvalid, ReasonTCPRst
		}
	}

	if !skipWindow {
		switch t.inWindow(tc, dir, seg) {
		case tcpIgnore:
			return vNoUpdate, ReasonNone
		case tcpInvalid:
			t.tcpHandleInvalid(e, tc, dir, index, now)
			return vInvalid, ReasonTCPWindow
		}
	}

	// From here on the packet is in window.
	tc.lastIndex = index
	tc.lastDir = uint8(dir)
	tc.state = ns
	if old != ns && ns == TCPFinWait {
		tc.seen[dir].flags |= tcpFlagCloseInit
	}

	to := &t.timeouts
	var timeout int64
	switch {
	case tc.retrans >= t.maxRetrans && to[ns] > to[toRetrans]:
		timeout = to[toRetrans]
	case index == tcpRstSet:
		timeout = to[TCPClose]
	case (tc.seen[0].flags|tc.seen[1].flags)&tcpFlagDataUnack != 0 && to[ns] > to[toUnack]:
		timeout = to[toUnack]
	case tc.lastWin == 0 && to[ns] > to[toRetrans]:
		timeout = to[toRetrans]
	default:
		timeout = to[ns]
	}

	if e.status&StatusSeenReply == 0 {
		if seg.has(thRST) {
			// The only reply is a RST: no connection to keep.
			e.account(dir, p, now)
			return vKill, ReasonNone
		}
		if index == tcpSynSet && old == TCPSynSent {
			// A retransmitted SYN does not renew the timeout, or port
			// reuse could keep the entry alive for ever.
			return vNoUpdate, ReasonNone
		}
		if ns == TCPEstablished && timeout > to[toUnack] {
			// Picked up mid-stream and no reply yet.
			timeout = to[toUnack]
		}
	} else if e.status&StatusAssured == 0 && (old == TCPSynRecv || old == TCPEstablished) &&
		ns == TCPEstablished {
		// A valid ACK after SYN_RECV, or an answer on a picked-up
		// connection.
		e.status |= StatusAssured
	}
	t.refresh(e, dir, p, now, timeout)
	return vAccept, ReasonNone
}

// tcpRst decides a RST that would move the connection to CLOSE: whether its
// sequence number is plausible, and whether the window check is skipped.
func (t *Table) tcpRst(e *flow, tc *tcpConn, dir Dir, seg *tcpSeg, old TCPState) (ns TCPState, skipWindow, invalid bool) {
	ns = TCPClose
	if tcpCanEarlyDrop(tc.state) {
		// Closing anyway: the tuple may already be reused; skip checks.
		return ns, true, false
	}
	peer := &tc.seen[1-dir]
	established := tc.state == TCPEstablished && e.status&StatusAssured != 0
	if peer.flags&tcpFlagMaxAckSet != 0 && tc.lastIndex != tcpSynSet {
		seq := seg.seq
		switch {
		case seq == 0 && !established:
			// Most likely answering a SYN we let through.
			return ns, false, false
		case before(seq, peer.maxAck) && !t.cfg.TCPIgnoreInvalidRST:
			return ns, false, true
		case !established || seq == peer.maxAck:
			return ns, false, false
		case tc.lastIndex == tcpAckSet && tc.lastDir == uint8(dir) && seq == tc.lastEnd:
			// The RST ends a train of data from the same side.
			return ns, false, false
		}
		// The sequence number is not exact: keep the state and let a
		// challenge ACK sort it out.
		ns = old
	}
	if ((e.status&StatusSeenReply != 0 && tc.lastIndex == tcpSynSet) ||
		(e.status&StatusAssured == 0 && tc.lastIndex == tcpAckSet)) &&
		seg.ack == tc.lastEnd {
		// A RST answering a SYN or ACK we let through while out of sync.
		return ns, true, false
	}
	if old == TCPSynSent && tc.lastIndex == tcpAckSet && tc.lastDir == uint8(DirReply) &&
		seg.seq == tc.lastAck {
		// A RST answering a challenge ACK we let through.
		return ns, true, false
	}
	return ns, false, false
}

// tcpHandleInvalid is nf_tcp_handle_invalid: an assured connection whose
// FIN or RST from both sides was out of window is probably dead; shorten
// its timeout as for unacknowledged data.
func (t *Table) tcpHandleInvalid(e *flow, tc *tcpConn, dir Dir, index uint8, now int64) {
	if e.status&StatusAssured == 0 || e.status&StatusFixedTimeout != 0 {
		return
	}
	if index != tcpRstSet && index != tcpFinSet {
		return
	}
	if tc.lastDir != uint8(dir) && (tc.lastIndex == tcpFinSet || tc.lastIndex == tcpRstSet) {
		left := e.expires - now
		if left < int64(120e9) {
			return
		}
		if unack := t.timeouts[toUnack]; left > unack {
			e.expires = now + unack
		}
		return
	}
	tc.lastIndex = index
	tc.lastDir = uint8(dir)
}
