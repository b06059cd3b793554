package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// qtables' own NFQUEUE socket. The kernel sends each queued packet as one
// netlink message in its own datagram; reading them one recvmsg at a time
// and answering each with its own sendmsg costs two system calls a
// packet, and go-nfqueue adds allocations for every attribute. Here a
// reader takes up to recvBatch messages with one recvmmsg, parses them in
// place (nothing is allocated), and the verdicts of the whole batch leave
// in one sendmsg: the netlink datagram carries one message per verdict, or
// one NFQNL_MSG_VERDICT_BATCH for each run of packets with the same
// verdict when the reader judges its queue's packets in order itself.
//
// Message layouts: linux/netfilter/nfnetlink_queue.h; every attribute
// value is in network byte order, the netlink headers in host order.

const (
	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = nfnlSubsysQueue<<8 | 0
	nfqnlMsgVerdict = nfnlSubsysQueue<<8 | 1
	nfqnlMsgConfig  = nfnlSubsysQueue<<8 | 2
	nfqnlMsgBatch   = nfnlSubsysQueue<<8 | 3

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaMark       = 3
	nfqaInDev      = 5
	nfqaOutDev     = 6
	nfqaHwAddr     = 9
	nfqaPayload    = 10
	nfqaSkbInfo    = 14

	nfqaCfgCmd     = 1
	nfqaCfgParams  = 2
	nfqaCfgMaxLen  = 3
	nfqaCfgMask    = 4
	nfqaCfgFlags   = 5
	nfqnlCfgBind   = 1
	nfqnlCopyPkt   = 2
	nfqaCfgFFailOp = 1 << 0
	nfqaCfgFGSO    = 1 << 2

	nlaTypeMask = 0x3fff

	// The verdicts qtables gives (NF_DROP, NF_ACCEPT, NF_REPEAT).
	nfDrop   = 0
	nfAccept = 1
	nfRepeat = 4
)

// recvBatch is how many messages one recvmmsg takes; recvSlot the room for
// one: the largest packet (copy range 0xffff, a GSO segment included) and
// its headers.
const (
	recvBatch = 32
	recvSlot  = 0xffff + 4096
)

// nfqConn is one bound queue.
type nfqConn struct {
	num uint16
	// idx is the reader's index, for the workers' verdict batches.
	idx int
	fd  int
	// early is the verdict for packets that arrive while the queue is
	// being configured (before judging starts).
	early int
}

// nfqOptions configure a queue.
type nfqOptions struct {
	queueLen uint32
	sockBuf  int
	failOpen bool
	early    int
}

// openNFQ binds queue num in the calling thread's network namespace:
// copy the whole packet, GSO segments whole, the queue length, fail-open
// as asked. The socket blocks: a reader waits in recvmmsg itself (one
// system call per batch, and no poller round trip before the first
// packet of a quiet moment, which the latency shows), waking every
// recvTimeout to see whether the daemon is stopping.
func openNFQ(num uint16, o nfqOptions) (*nfqConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	c := &nfqConn{num: num, fd: fd, early: o.early}
	fail := func(err error) (*nfqConn, error) {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("netlink bind: %w", err))
	}
	// Connected to the kernel: verdicts are plain writes.
	if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("netlink connect: %w", err))
	}
	if o.sockBuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.sockBuf); err != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.sockBuf)
		}
	}
	tv := unix.Timeval{Sec: 5}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0xffff)
	params[4] = nfqnlCopyPkt
	flags := uint32(nfqaCfgFGSO)
	if o.failOpen {
		flags |= nfqaCfgFFailOp
	}
	steps := []struct {
		what  string
		attrs [][]byte
	}{
		{"bind", [][]byte{nlattr(nfqaCfgCmd, []byte{nfqnlCfgBind, 0, 0, unix.AF_INET})}},
		{"copy mode", [][]byte{nlattr(nfqaCfgParams, params)}},
		{"queue length", [][]byte{nlattr(nfqaCfgMaxLen, be32(o.queueLen))}},
		{"flags", [][]byte{nlattr(nfqaCfgFlags, be32(flags)), nlattr(nfqaCfgMask, be32(nfqaCfgFGSO|nfqaCfgFFailOp))}},
	}
	for i, s := range steps {
		if err := c.configure(uint32(i+1), s.attrs); err != nil {
			if i == 0 && errors.Is(err, unix.EBUSY) {
				err = fmt.Errorf("%w (another program has bound it)", err)
			}
			return fail(fmt.Errorf("queue %d: %s: %w", num, s.what, err))
		}
	}
	tv = unix.NsecToTimeval(recvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail(err)
	}
	return c, nil
}

// configure sends one config message and waits for its acknowledgement.
// Packets that arrive meanwhile (hooks left by an earlier run) get the
// early verdict.
func (c *nfqConn) configure(seq uint32, attrs [][]byte) error {
	msg := nlmsg(nfqnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, c.num, attrs...)
	if _, err := unix.Write(c.fd, msg); err != nil {
		return err
	}
	buf := make([]byte, recvSlot)
	for {
		n, err := unix.Read(c.fd, buf)
		if err == unix.EINTR || err == unix.ENOBUFS {
			continue
		}
		if err != nil {
			return err
		}
		var ackErr error
		acked := false
		forEachMsg(buf[:n], func(typ uint16, mseq uint32, body []byte) {
			switch typ {
			case unix.NLMSG_ERROR:
				if mseq == seq && len(body) >= 4 {
					acked = true
					if e := int32(binary.NativeEndian.Uint32(body)); e != 0 {
						ackErr = unix.Errno(-e)
					}
				}
			case nfqnlMsgPacket:
				var p nfqPacket
				if p.parse(body) {
					unix.Write(c.fd, appendVerdict(nil, nfqnlMsgVerdict, c.num, p.id, c.early, 0, false))
				}
			}
		})
		if acked {
			return ackErr
		}
	}
}

// close closes the socket; the reader must have stopped.
func (c *nfqConn) close() error { return unix.Close(c.fd) }

// write sends a datagram of verdict messages. Netlink messages to the
// kernel are processed in the sender's system call: it does not block.
func (c *nfqConn) write(b []byte) error {
	for {
		_, err := unix.Write(c.fd, b)
		if err != unix.EINTR {
			return err
		}
	}
}

// mmsghdr is struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// recvBuf is one reader's batch of receive slots.
type recvBuf struct {
	mem  []byte
	iov  [recvBatch]unix.Iovec
	msgs [recvBatch]mmsghdr
}

func newRecvBuf() *recvBuf {
	r := &recvBuf{mem: make([]byte, recvBatch*recvSlot)}
	for i := range r.msgs {
		r.iov[i].Base = &r.mem[i*recvSlot]
		r.iov[i].SetLen(recvSlot)
		r.msgs[i].hdr.Iov = &r.iov[i]
		r.msgs[i].hdr.SetIovlen(1)
	}
	return r
}

// slot returns the i-th message received.
func (r *recvBuf) slot(i int) []byte {
	return r.mem[i*recvSlot : i*recvSlot+int(r.msgs[i].n)]
}

// recvTimeout bounds a reader's wait, so that it sees a stop request.
const recvTimeout = 100 * time.Millisecond

// recv waits for a message and takes as many as are there, up to the
// batch (MSG_WAITFORONE). It returns 0 and no error when the wait timed
// out; an error (ENOBUFS included) comes with n == 0.
func (c *nfqConn) recv(r *recvBuf) (int, error) {
	for {
		m, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&r.msgs[0])), recvBatch, unix.MSG_WAITFORONE, 0, 0)
		switch e {
		case 0:
			return int(m), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		}
		return 0, e
	}
}

// nfqPacket is a queued packet's message, parsed in place: payload
// aliases the receive buffer.
type nfqPacket struct {
	id      uint32
	hwProto uint16
	hook    uint8
	mark    uint32
	in, out uint32
	hw      [6]byte
	hasHw   bool
	skbInfo uint32
	payload []byte
}

// parse reads an NFQNL_MSG_PACKET body (after the netlink header). It
// reports false when the message has no packet header.
func (p *nfqPacket) parse(body []byte) bool {
	*p = nfqPacket{}
	if len(body) < 4 {
		return false
	}
	seen := false
	b := body[4:] // nfgenmsg
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask
		if l < 4 || l > len(b) {
			break
		}
		v := b[4:l]
		switch typ {
		case nfqaPacketHdr:
			if len(v) >= 7 {
				p.id = binary.BigEndian.Uint32(v)
				p.hwProto = binary.BigEndian.Uint16(v[4:])
				p.hook = v[6]
				seen = true
			}
		case nfqaMark:
			if len(v) >= 4 {
				p.mark = binary.BigEndian.Uint32(v)
			}
		case nfqaInDev:
			if len(v) >= 4 {
				p.in = binary.BigEndian.Uint32(v)
			}
		case nfqaOutDev:
			if len(v) >= 4 {
				p.out = binary.BigEndian.Uint32(v)
			}
		case nfqaHwAddr:
			// struct nfqnl_msg_packet_hw: be16 length, 2 bytes pad, 8 bytes.
			if len(v) >= 12 && binary.BigEndian.Uint16(v) == 6 {
				copy(p.hw[:], v[4:10])
				p.hasHw = true
			}
		case nfqaSkbInfo:
			if len(v) >= 4 {
				p.skbInfo = binary.BigEndian.Uint32(v)
			}
		case nfqaPayload:
			p.payload = v
		}
		b = b[min(nlAlign(l), len(b)):]
	}
	return seen
}

// forEachMsg calls fn for every netlink message in a datagram.
func forEachMsg(b []byte, fn func(typ uint16, seq uint32, body []byte)) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[4:]), binary.NativeEndian.Uint32(b[8:]), b[unix.NLMSG_HDRLEN:l])
		b = b[min(nlAlign(l), len(b)):]
	}
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func nlattr(typ uint16, v []byte) []byte {
	b := make([]byte, nlAlign(4+len(v)))
	binary.NativeEndian.PutUint16(b, uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], v)
	return b
}

// nlmsg builds a netfilter netlink message for queue num.
func nlmsg(typ uint16, flags uint16, seq uint32, num uint16, attrs ...[]byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b[16] = unix.AF_UNSPEC
	binary.BigEndian.PutUint16(b[18:], num)
	for _, a := range attrs {
		b = append(b, a...)
	}
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	return b
}

// verdictMsgLen is the size of a verdict message with a mark.
const verdictMsgLen = unix.NLMSG_HDRLEN + 4 + 12 + 8

// appendVerdict appends one verdict (typ nfqnlMsgVerdict) or batch
// verdict (nfqnlMsgBatch: every packet up to id) message, with the packet
// mark when withMark is set. It does not allocate when b has room.
func appendVerdict(b []byte, typ uint16, num uint16, id uint32, verdict int, mark uint32, withMark bool) []byte {
	n := unix.NLMSG_HDRLEN + 4 + 12
	if withMark {
		n += 8
	}
	start := len(b)
	b = append(b, make([]byte, n)...) // the compiler does not allocate for this idiom
	m := b[start:]
	binary.NativeEndian.PutUint32(m, uint32(n))
	binary.NativeEndian.PutUint16(m[4:], typ)
	binary.NativeEndian.PutUint16(m[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(m[8:], 0)
	binary.NativeEndian.PutUint32(m[12:], 0)
	m[16], m[17] = unix.AF_UNSPEC, 0
	binary.BigEndian.PutUint16(m[18:], num)
	a := m[20:]
	binary.NativeEndian.PutUint16(a, 12)
	binary.NativeEndian.PutUint16(a[2:], nfqaVerdictHdr)
	binary.BigEndian.PutUint32(a[4:], uint32(verdict))
	binary.BigEndian.PutUint32(a[8:], id)
	if withMark {
		a = a[12:]
		binary.NativeEndian.PutUint16(a, 8)
		binary.NativeEndian.PutUint16(a[2:], nfqaMark)
		binary.BigEndian.PutUint32(a[4:], mark)
	}
	return b
}

// verdictBatch collects the verdicts of one goroutine for one queue and
// sends them in one datagram at Flush. With ordered set (the reader that
// judges its queue's packets itself, in the kernel's order), each run of
// consecutive packets with the same verdict and mark becomes one batch
// verdict: the kernel applies it to every packet of the queue up to the
// run's last id, and all earlier ones have had theirs.
type verdictBatch struct {
	c       *nfqConn
	ordered bool
	buf     []byte
	// The current run (ordered only).
	runN     int
	runLast  uint32
	runV     int
	runMark  uint32
	runHasMk bool
	// cnt, when set, counts the datagrams and messages sent.
	cnt  *counters
	msgs uint64
}

func newVerdictBatch(c *nfqConn, ordered bool) *verdictBatch {
	return &verdictBatch{c: c, ordered: ordered, buf: make([]byte, 0, recvBatch*verdictMsgLen*2)}
}

// Verdict records the verdict for packet id.
func (v *verdictBatch) Verdict(id uint32, verdict int, mark uint32, withMark bool) error {
	if !v.ordered {
		v.buf = appendVerdict(v.buf, nfqnlMsgVerdict, v.c.num, id, verdict, mark, withMark)
		v.msgs++
		return nil
	}
	if v.runN > 0 && v.runV == verdict && v.runHasMk == withMark && (!withMark || v.runMark == mark) {
		v.runN++
		v.runLast = id
		return nil
	}
	v.endRun()
	v.runN, v.runLast, v.runV, v.runMark, v.runHasMk = 1, id, verdict, mark, withMark
	return nil
}

func (v *verdictBatch) endRun() {
	if v.runN == 0 {
		return
	}
	typ := uint16(nfqnlMsgVerdict)
	if v.runN > 1 {
		typ = nfqnlMsgBatch
	}
	v.buf = appendVerdict(v.buf, typ, v.c.num, v.runLast, v.runV, v.runMark, v.runHasMk)
	v.msgs++
	v.runN = 0
}

// Flush sends the collected verdicts.
func (v *verdictBatch) Flush() error {
	v.endRun()
	if len(v.buf) == 0 {
		return nil
	}
	err := v.c.write(v.buf)
	v.buf = v.buf[:0]
	if v.cnt != nil {
		v.cnt.verdictDgrams.Add(1)
		v.cnt.verdictMsgs.Add(v.msgs)
	}
	v.msgs = 0
	return err
}
