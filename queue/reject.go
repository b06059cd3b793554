package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/qtables/qtables/matchers"
)

// REJECT replies. The kernel's REJECT target (nf_reject_ipv4.c) builds a
// TCP RST or hands an ICMP destination-unreachable to icmp_send, then drops
// the packet. qtables builds the same packets from the queued bytes and
// sends them through a raw IPv4 socket opened in the daemon's network
// namespace, as locally generated packets (they pass OUTPUT and
// POSTROUTING, as the kernel's do), then drops.
//
// What is not reproduced: IP options of the original are not echoed in an
// ICMP error (icmp_send reverses source routes and the like), the reply is
// not attached to the original's conntrack entry, the TTL is the
// namespace's ip_default_ttl (a route's hoplimit metric is not consulted),
// icmp_errors_use_inbound_ifaddr is ignored (the routing table picks the
// source of an ICMP error for a forwarded packet), and "physical"
// broadcasts and multicasts (a unicast IP address sent to a broadcast MAC)
// are not recognised: NFQUEUE does not say where a frame was addressed.

// RejectOutcome says what became of one REJECT.
type RejectOutcome uint8

const (
	// RejectSent: the reply was built and handed to the kernel.
	RejectSent RejectOutcome = iota
	// The kernel sends nothing for these originals.
	RejectSkipFragment    // a non-first fragment
	RejectSkipNotTCP      // tcp-reset for a packet that is not TCP
	RejectSkipTruncated   // no complete TCP header, or no ICMP type byte
	RejectSkipRST         // a TCP RST is never answered
	RejectSkipChecksum    // the transport checksum is verifiably wrong
	RejectSkipBroadcast   // sent to a broadcast or multicast address
	RejectSkipICMPError   // an ICMP error (or unknown type) is never answered with one
	RejectSkipSource      // the source is no unicast address to answer
	RejectSkipRateLimited // ICMP rate limiting (icmp_ratelimit, icmp_msgs_per_sec)
	// RejectFailed: the reply could not be sent (no socket, send error).
	RejectFailed
)

var rejectOutcomeNames = [...]string{
	RejectSent: "sent", RejectSkipFragment: "fragment", RejectSkipNotTCP: "not_tcp", RejectSkipTruncated: "truncated",
	RejectSkipRST: "rst", RejectSkipChecksum: "bad_checksum", RejectSkipBroadcast: "broadcast",
	RejectSkipICMPError: "icmp_error", RejectSkipSource: "source", RejectSkipRateLimited: "rate_limited",
	RejectFailed: "failed",
}

func (o RejectOutcome) String() string {
	if int(o) < len(rejectOutcomeNames) {
		return rejectOutcomeNames[o]
	}
	return "RejectOutcome(" + strconv.Itoa(int(o)) + ")"
}

// RejectPacket describes the rejected packet as the kernel sees it besides
// its bytes.
type RejectPacket struct {
	// Hook is where REJECT ran (INPUT, FORWARD or OUTPUT).
	Hook matchers.Hook
	// LocalDst: the destination is one of the host's addresses (the
	// route is RTCF_LOCAL). An ICMP error then comes from that address;
	// otherwise the routing table picks the source (address 0 in the
	// header: the raw socket fills it in).
	LocalDst bool
	// NonUnicastDst: the destination is a broadcast or multicast address.
	NonUnicastDst bool
	// NonUnicastSrc: the source is no unicast address (0.0.0.0, a
	// broadcast or multicast address).
	NonUnicastSrc bool
	// VerifyChecksum: the kernel has not verified the transport checksum
	// (NFQUEUE's NFQA_SKB_CSUM_NOTVERIFIED), so REJECT does: a packet with a
	// wrong one gets no reply. A packet whose checksum is not computed yet
	// (CSUMNOTREADY, local output) or was verified is not checked.
	VerifyChecksum bool
	// TTL of the reply (the route's hop limit: ip_default_ttl).
	TTL uint8
}

// ICMP error sizes: icmp_send quotes the original datagram so that the
// error stays within 576 bytes (RFC 1812 4.3.2.3).
const (
	icmpErrorMax   = 576
	icmpQuoteMax   = icmpErrorMax - 20 - 8
	rejectBufBytes = icmpErrorMax
	// precInternetControl is IPTOS_PREC_INTERNETCONTROL, the precedence of
	// ICMP errors; iptosTOSMask keeps the original's TOS bits.
	precInternetControl = 0xc0
	iptosTOSMask        = 0x1e
)

// BuildReject builds in buf (at least 576 bytes) the reply the kernel's
// REJECT sends for orig, a raw IPv4 datagram, or says why it sends none.
// The reply is a complete IPv4 datagram with valid checksums, except that
// an ICMP error for a packet to a non-local address has source 0.0.0.0
// and ID 0: the kernel chooses both when it sends it (raw_send_hdrinc).
func BuildReject(buf, orig []byte, with matchers.RejectType, p RejectPacket) ([]byte, RejectOutcome) {
	if len(orig) < 20 || orig[0]>>4 != 4 {
		return nil, RejectSkipTruncated
	}
	ihl := int(orig[0]&0x0f) * 4
	if ihl < 20 || len(orig) < ihl {
		return nil, RejectSkipTruncated
	}
	if binary.BigEndian.Uint16(orig[6:8])&0x1fff != 0 {
		return nil, RejectSkipFragment
	}
	if with == matchers.RejectTCPReset {
		return buildReset(buf, orig, ihl, p)
	}
	typ, code, ok := with.ICMP()
	if !ok {
		return nil, RejectFailed
	}
	return buildUnreach(buf, orig, ihl, typ, code, p)
}

// buildReset is nf_send_reset: a 40-byte RST answering orig.
func buildReset(buf, orig []byte, ihl int, p RejectPacket) ([]byte, RejectOutcome) {
	if orig[9] != 6 {
		return nil, RejectSkipNotTCP
	}
	if len(orig) < ihl+20 {
		return nil, RejectSkipTruncated
	}
	th := orig[ihl:]
	flags := th[13]
	if flags&0x04 != 0 {
		return nil, RejectSkipRST
	}
	if p.VerifyChecksum && !transportChecksumOK(orig, ihl) {
		return nil, RejectSkipChecksum
	}
	if p.NonUnicastDst {
		return nil, RejectSkipBroadcast
	}
	r := buf[:40]
	clear(r)
	r[0] = 0x45
	binary.BigEndian.PutUint16(r[2:], 40)
	binary.BigEndian.PutUint16(r[6:], 0x4000) // DF, ID 0
	r[8], r[9] = p.TTL, 6
	copy(r[12:16], orig[16:20]) // from the original's destination
	copy(r[16:20], orig[12:16])
	t := r[20:]
	copy(t[0:2], th[2:4])
	copy(t[2:4], th[0:2])
	t[12] = 5 << 4
	if flags&0x10 != 0 { // ACK: the RST takes the acknowledged sequence number
		copy(t[4:8], th[8:12])
		t[13] = 0x04
	} else {
		doff := uint32(th[12]>>4) * 4
		seq := binary.BigEndian.Uint32(th[4:8])
		// The kernel's unsigned arithmetic, wrap-around included.
		ack := seq + uint32(flags>>1&1) + uint32(flags&1) + uint32(len(orig)) - uint32(ihl) - doff
		binary.BigEndian.PutUint32(t[8:12], ack)
		t[13] = 0x14 // RST, ACK
	}
	binary.BigEndian.PutUint16(t[16:], ^pseudoSum(r[12:16], r[16:20], 6, t))
	binary.BigEndian.PutUint16(r[10:], ^onesSum(0, r[:20]))
	return r, RejectSent
}

// icmpIsError reports whether ICMP type t is an error (or unknown, which
// icmp_send assumes is one): no ICMP error answers it.
func icmpIsError(t uint8) bool {
	switch t {
	case 0, 8, 13, 14, 15, 16, 17, 18:
		return false
	}
	return true
}

// buildUnreach is nf_send_unreach followed by icmp_send's checks.
func buildUnreach(buf, orig []byte, ihl int, typ, code uint8, p RejectPacket) ([]byte, RejectOutcome) {
	proto := orig[9]
	if p.VerifyChecksum && rejectVerifiesChecksum(orig, ihl) && !transportChecksumOK(orig, ihl) {
		return nil, RejectSkipChecksum
	}
	if p.NonUnicastDst {
		return nil, RejectSkipBroadcast
	}
	if p.NonUnicastSrc {
		return nil, RejectSkipSource
	}
	if proto == 1 {
		if len(orig) <= ihl {
			return nil, RejectSkipTruncated
		}
		if icmpIsError(orig[ihl]) {
			return nil, RejectSkipICMPError
		}
	}
	quote := min(len(orig), icmpQuoteMax)
	n := 28 + quote
	r := buf[:n]
	clear(r[:28])
	r[0] = 0x45
	r[1] = orig[1]&iptosTOSMask | precInternetControl
	binary.BigEndian.PutUint16(r[2:], uint16(n))
	r[8], r[9] = p.TTL, 1
	if p.LocalDst {
		copy(r[12:16], orig[16:20])
	}
	copy(r[16:20], orig[12:16])
	icmp := r[20:]
	icmp[0], icmp[1] = typ, code
	copy(icmp[8:], orig[:quote])
	binary.BigEndian.PutUint16(icmp[2:], ^onesSum(0, icmp))
	binary.BigEndian.PutUint16(r[10:], ^onesSum(0, r[:20]))
	return r, RejectSent
}

// rejectVerifiesChecksum is nf_reject_verify_csum: protocols whose
// checksum is optional, partial or absent are not verified (UDP only when
// its checksum field is 0).
func rejectVerifiesChecksum(orig []byte, ihl int) bool {
	switch orig[9] {
	case 17:
		return len(orig) < ihl+8 || binary.BigEndian.Uint16(orig[ihl+6:]) != 0
	case 47, 51, 50, 132, 136, 33:
		return false
	}
	return true
}

// transportChecksumOK is nf_ip_checksum: the one's complement sum of the
// transport data, with the pseudo-header for TCP and UDP, must be all ones.
func transportChecksumOK(orig []byte, ihl int) bool {
	data := orig[ihl:]
	switch orig[9] {
	case 6, 17:
		return pseudoSum(orig[12:16], orig[16:20], orig[9], data) == 0xffff
	}
	return onesSum(0, data) == 0xffff
}

// onesSum adds b to sum as 16-bit one's complement words and folds.
func onesSum(sum uint32, b []byte) uint16 {
	s := uint64(sum)
	for len(b) >= 8 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// pseudoSum is the sum of the TCP/UDP pseudo-header and data.
func pseudoSum(src, dst []byte, proto uint8, data []byte) uint16 {
	s := uint32(binary.BigEndian.Uint16(src)) + uint32(binary.BigEndian.Uint16(src[2:])) +
		uint32(binary.BigEndian.Uint16(dst)) + uint32(binary.BigEndian.Uint16(dst[2:])) +
		uint32(proto) + uint32(len(data))
	return onesSum(s, data)
}

// rejectSysctls are the namespace's settings that shape replies, read from
// /proc/sys/net/ipv4 when the sender opens and on every refresh.
type rejectSysctls struct {
	ttl uint8
	// reflect is fwmark_reflect: replies carry the original's mark.
	reflect bool
	// ratelimit (ms) and ratemask are icmp_ratelimit and icmp_ratemask;
	// msgsPerSec and msgsBurst icmp_msgs_per_sec and icmp_msgs_burst.
	ratelimit  int
	ratemask   uint32
	msgsPerSec int
	msgsBurst  int
}

var defaultRejectSysctls = rejectSysctls{ttl: 64, ratelimit: 1000, ratemask: 6168, msgsPerSec: 1000, msgsBurst: 50}

func readRejectSysctls(dir string) rejectSysctls {
	s := defaultRejectSysctls
	read := func(name string, def int) int {
		b, err := os.ReadFile(dir + "/" + name)
		if err != nil {
			return def
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return def
		}
		return v
	}
	if v := read("ip_default_ttl", 64); v > 0 && v < 256 {
		s.ttl = uint8(v)
	}
	s.reflect = read("fwmark_reflect", 0) != 0
	s.ratelimit = read("icmp_ratelimit", s.ratelimit)
	s.ratemask = uint32(read("icmp_ratemask", int(s.ratemask)))
	s.msgsPerSec = read("icmp_msgs_per_sec", s.msgsPerSec)
	s.msgsBurst = read("icmp_msgs_burst", s.msgsBurst)
	return s
}

// icmpLimiter is the kernel's ICMP rate limiting for the types in
// icmp_ratemask (destination unreachable is one by default): a global
// token bucket of icmp_msgs_per_sec with bursts of icmp_msgs_burst, and a
// bucket per destination (inet_peer_xrlim_allow) that earns one token per
// millisecond up to 6 * icmp_ratelimit and spends icmp_ratelimit per error:
// a burst of 6, then one error per icmp_ratelimit. Errors to the host's
// own addresses are not limited.
type icmpLimiter struct {
	mu     sync.Mutex
	global *rate.Limiter
	peers  map[[4]byte]peerTokens
	cfg    rejectSysctls
}

type peerTokens struct {
	tokens int64 // milliseconds
	last   time.Time
}

// xrlimBurst is XRLIM_BURST_FACTOR.
const xrlimBurst = 6

// maxPeers bounds the per-destination table; past it, destinations whose
// bucket has refilled are forgotten (a fresh bucket is a full one).
const maxPeers = 4096

func newICMPLimiter(cfg rejectSysctls) *icmpLimiter {
	l := &icmpLimiter{peers: map[[4]byte]peerTokens{}}
	l.setConfig(cfg)
	return l
}

func (l *icmpLimiter) setConfig(cfg rejectSysctls) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg = cfg
	lim := rate.Limit(cfg.msgsPerSec)
	if cfg.msgsPerSec <= 0 {
		lim = 0
	}
	if l.global == nil {
		l.global = rate.NewLimiter(lim, max(cfg.msgsBurst, 1))
	} else {
		l.global.SetLimit(lim)
		l.global.SetBurst(max(cfg.msgsBurst, 1))
	}
}

// allow reports whether an ICMP error of type typ to dst may be sent now.
func (l *icmpLimiter) allow(typ uint8, dst [4]byte, local bool, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if typ > 31 || l.cfg.ratemask&(1<<typ) == 0 || local {
		return true
	}
	if !l.global.AllowN(now, 1) {
		return false
	}
	timeout := int64(l.cfg.ratelimit)
	if timeout <= 0 {
		return true
	}
	p, ok := l.peers[dst]
	if !ok {
		if len(l.peers) >= maxPeers {
			l.sweep(now)
		}
		p = peerTokens{tokens: xrlimBurst * timeout, last: now}
	} else {
		p.tokens = min(p.tokens+now.Sub(p.last).Milliseconds(), xrlimBurst*timeout)
		if now.After(p.last) {
			p.last = now
		}
	}
	allowed := p.tokens >= timeout
	if allowed {
		p.tokens -= timeout
	}
	l.peers[dst] = p
	return allowed
}

func (l *icmpLimiter) sweep(now time.Time) {
	full := time.Duration(xrlimBurst*l.cfg.ratelimit) * time.Millisecond
	for k, p := range l.peers {
		if now.Sub(p.last) >= full {
			delete(l.peers, k)
		}
	}
	if len(l.peers) >= maxPeers {
		clear(l.peers)
	}
}

// localAddrs are the namespace's own addresses and broadcast addresses,
// for the decisions the kernel takes from the route of the original
// (RTCF_LOCAL, RTCF_BROADCAST). Immutable; refreshed by replacing it.
type localAddrs struct {
	local, bcast []uint32
}

func loadLocalAddrs() (*localAddrs, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	la := &localAddrs{}
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip4 := ipn.IP.To4()
			if ip4 == nil {
				continue
			}
			ip := binary.BigEndian.Uint32(ip4)
			la.local = append(la.local, ip)
			ones, bits := ipn.Mask.Size()
			if bits == 32 && ones < 31 {
				mask := ^uint32(0) << (32 - ones)
				la.bcast = append(la.bcast, ip|^mask)
			}
		}
	}
	return la, nil
}

func (la *localAddrs) isLocal(a uint32) bool {
	if a>>24 == 127 {
		return true
	}
	for _, l := range la.local {
		if l == a {
			return true
		}
	}
	return false
}

func (la *localAddrs) isBroadcast(a uint32) bool {
	if a == 0xffffffff || a>>28 == 0xe {
		return true
	}
	for _, b := range la.bcast {
		if b == a {
			return true
		}
	}
	return false
}

// nonUnicastSrc: sources nothing can answer.
func (la *localAddrs) nonUnicastSrc(a uint32) bool {
	return a == 0 || la.isBroadcast(a)
}

// rejecter sends REJECT replies through one raw socket (IPPROTO_RAW: the
// header is ours) in the namespace it was opened in. Safe for concurrent
// use; each worker brings its own rejectScratch.
type rejecter struct {
	fd int
	// write sends one reply; a test replaces it to capture replies.
	write   func(reply, oob []byte, to *unix.SockaddrInet4) error
	sysctls atomic.Pointer[rejectSysctls]
	addrs   atomic.Pointer[localAddrs]
	lim     *icmpLimiter
	// outcomes counts every REJECT by outcome.
	outcomes [RejectFailed + 1]atomic.Uint64
	// lastErr is the last send error, for the daemon's log.
	lastErr atomic.Pointer[error]
}

// sysctlDir is where the namespace's IPv4 settings are read.
const sysctlDir = "/proc/sys/net/ipv4"

// openRejecter opens the raw socket in the calling thread's network
// namespace (needs CAP_NET_RAW).
func openRejecter() (*rejecter, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("REJECT: raw socket: %w", err)
	}
	r := newRejecter(fd)
	r.refresh()
	return r, nil
}

func newRejecter(fd int) *rejecter {
	r := &rejecter{fd: fd, lim: newICMPLimiter(defaultRejectSysctls)}
	r.write = r.sendmsg
	s := defaultRejectSysctls
	r.sysctls.Store(&s)
	r.addrs.Store(&localAddrs{})
	return r
}

// refresh re-reads the settings and the host's addresses.
func (r *rejecter) refresh() {
	s := readRejectSysctls(sysctlDir)
	r.sysctls.Store(&s)
	r.lim.setConfig(s)
	if la, err := loadLocalAddrs(); err == nil {
		r.addrs.Store(la)
	}
}

func (r *rejecter) close() error {
	if r == nil || r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// rejectScratch is one worker's buffers for building and sending replies.
type rejectScratch struct {
	buf [rejectBufBytes]byte
	sa  unix.SockaddrInet4
	oob [4]uint64 // a control message, 8-byte aligned
}

// snapshot returns the REJECT counts by outcome (only outcomes seen).
func (r *rejecter) snapshot() map[string]uint64 {
	var m map[string]uint64
	for i := range r.outcomes {
		if n := r.outcomes[i].Load(); n > 0 {
			if m == nil {
				m = map[string]uint64{}
			}
			m[RejectOutcome(i).String()] = n
		}
	}
	return m
}

// NFQA_SKB_INFO flags (linux/netfilter/nfnetlink_queue.h).
const (
	skbCsumNotReady    = 1 << 0
	skbGSO             = 1 << 1
	skbCsumNotVerified = 1 << 2
)

// reject sends the reply for one rejected packet: orig as queued, at hook,
// with the packet mark after the rules and the NFQA_SKB_INFO flags.
func (r *rejecter) reject(sc *rejectScratch, orig []byte, with matchers.RejectType, hook matchers.Hook, mark, skbInfo uint32) RejectOutcome {
	out := r.send(sc, orig, with, hook, mark, skbInfo)
	r.outcomes[out].Add(1)
	return out
}

func (r *rejecter) send(sc *rejectScratch, orig []byte, with matchers.RejectType, hook matchers.Hook, mark, skbInfo uint32) RejectOutcome {
	if len(orig) < 20 {
		return RejectSkipTruncated
	}
	sys := r.sysctls.Load()
	la := r.addrs.Load()
	src, dst := binary.BigEndian.Uint32(orig[12:16]), binary.BigEndian.Uint32(orig[16:20])
	p := RejectPacket{
		Hook:           hook,
		LocalDst:       hook == matchers.HookInput || (hook != matchers.HookForward && la.isLocal(dst)),
		NonUnicastDst:  la.isBroadcast(dst),
		NonUnicastSrc:  la.nonUnicastSrc(src),
		VerifyChecksum: skbInfo&skbCsumNotVerified != 0 && skbInfo&skbCsumNotReady == 0,
		TTL:            sys.ttl,
	}
	reply, out := BuildReject(sc.buf[:], orig, with, p)
	if out != RejectSent {
		return out
	}
	if typ, _, isICMP := with.ICMP(); isICMP {
		var d [4]byte
		copy(d[:], orig[12:16])
		if !r.lim.allow(typ, d, la.isLocal(src), time.Now()) {
			return RejectSkipRateLimited
		}
	}
	copy(sc.sa.Addr[:], reply[16:20])
	var oob []byte
	if sys.reflect && mark != 0 {
		oob = markCmsg(sc, mark)
	}
	if err := r.write(reply, oob, &sc.sa); err != nil {
		r.setErr(fmt.Errorf("REJECT: send %s to %d.%d.%d.%d: %w", with, reply[16], reply[17], reply[18], reply[19], err))
		return RejectFailed
	}
	return RejectSent
}

// setErr records the last send error (off the success path: taking the
// address of a variable there would allocate it on every reply).
func (r *rejecter) setErr(err error) { r.lastErr.Store(&err) }

// errNoRejectSocket explains a REJECT reply that could not be sent
// because the raw socket could not be opened.
var errNoRejectSocket = errors.New("no raw socket (CAP_NET_RAW missing?)")

// sendmsg hands a reply to the kernel without blocking: a full socket
// buffer fails the reply rather than stalling the worker.
func (r *rejecter) sendmsg(reply, oob []byte, to *unix.SockaddrInet4) error {
	if r.fd < 0 {
		return errNoRejectSocket
	}
	for {
		_, err := unix.SendmsgN(r.fd, reply, oob, to, unix.MSG_DONTWAIT)
		if err != unix.EINTR {
			return err
		}
	}
}

// markCmsg encodes an SO_MARK control message (the reply's packet mark,
// for fwmark_reflect) into the scratch's aligned buffer.
func markCmsg(sc *rejectScratch, mark uint32) []byte {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&sc.oob[0])), len(sc.oob)*8)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&sc.oob[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SO_MARK
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], mark)
	return b[:unix.CmsgSpace(4)]
}
