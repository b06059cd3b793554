package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dialErr connects from the client to dst:port and returns the error (nil
// when the connection is established) and how long it took.
func (tp *liveTopo) dialErr(dst netip.Addr, port uint16, timeout time.Duration) (time.Duration, error) {
	var took time.Duration
	err := tp.client.Do(func() error {
		start := time.Now()
		d := net.Dialer{Timeout: timeout}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(dst, port).String())
		took = time.Since(start)
		if err == nil {
			c.Close()
		}
		return err
	})
	return took, err
}

// udpExchange sends one datagram from a connected client socket to
// dst:port and reads the answer: the echo, or the error an ICMP
// destination unreachable reports on a connected socket.
func (tp *liveTopo) udpExchange(dst netip.Addr, port uint16, timeout time.Duration) (string, error) {
	var answer string
	err := tp.client.Do(func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(dst, port).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		answer = string(buf[:n])
		return err
	})
	return answer, err
}

const liveRejectRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 85 -j REJECT --reject-with tcp-reset
-A INPUT -p udp -m udp --dport 86 -j REJECT
-A FORWARD -p tcp -m tcp --dport 85 -j REJECT --reject-with tcp-reset
-A FORWARD -p udp -m udp --dport 86 -j REJECT
-A FORWARD -p tcp -m tcp --dport 87 -j REJECT --reject-with icmp-admin-prohibited
-A FORWARD -p udp -m udp --dport 88 -j REJECT --reject-with icmp-net-prohibited
COMMIT
`

// TestLiveReject: REJECT through hooked INPUT and FORWARD answers as the
// kernel would: a TCP connect fails at once with ECONNREFUSED (an RST),
// a connected UDP socket reads ECONNREFUSED (ICMP port unreachable), and
// the other ICMP codes map to the errors the client's kernel gives them
// (net- and host-unreachable are soft errors a UDP socket does not report,
// so the UDP probe uses net-prohibited).
// Every port has a listener, so without qtables every exchange succeeds:
// the errors can only come from qtables' replies.
func TestLiveReject(t *testing.T) {
	tp := newLiveTopo(t)
	for _, p := range []uint16{85, 87} {
		serveTCPAccept(t, tp.server, serverAddr, p)
	}
	serveTCPAccept(t, tp.router, routerIn, 85)
	for _, p := range []uint16{86, 88} {
		serveUDPEcho(t, tp.server, serverAddr, p)
	}
	serveUDPEcho(t, tp.router, routerIn, 86)

	type probe struct {
		name string
		dst  netip.Addr
		port uint16
		udp  bool
		want syscall.Errno
	}
	probes := []probe{
		{"INPUT tcp-reset", routerIn, 85, false, syscall.ECONNREFUSED},
		{"INPUT udp port-unreachable", routerIn, 86, true, syscall.ECONNREFUSED},
		{"FORWARD tcp-reset", serverAddr, 85, false, syscall.ECONNREFUSED},
		{"FORWARD udp port-unreachable", serverAddr, 86, true, syscall.ECONNREFUSED},
		{"FORWARD tcp admin-prohibited", serverAddr, 87, false, syscall.EHOSTUNREACH},
		{"FORWARD udp net-prohibited", serverAddr, 88, true, syscall.ENETUNREACH},
	}
	exchange := func(p probe) (time.Duration, error) {
		if p.udp {
			start := time.Now()
			ans, err := tp.udpExchange(p.dst, p.port, 3*time.Second)
			if err == nil && ans != "echo ping" {
				err = fmt.Errorf("answer %q", ans)
			}
			return time.Since(start), err
		}
		return tp.dialErr(p.dst, p.port, 3*time.Second)
	}
	// Without qtables every exchange succeeds.
	for _, p := range probes {
		if _, err := exchange(p); err != nil {
			t.Fatalf("%s without qtables: %v", p.name, err)
		}
	}

	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, liveRejectRules)
	stats := filepath.Join(tp.dir, "stats.json")
	d := tp.startDaemon(t, "--rules", rules, "--hook", "INPUT", "--hook", "FORWARD", "--queues", "0-1", "--stats-file", stats)
	for _, p := range probes {
		took, err := exchange(p)
		if !errors.Is(err, p.want) {
			t.Errorf("%s: %v, want %v", p.name, err, p.want)
			continue
		}
		// An answer, not a timeout: the client learns at once.
		if took > time.Second {
			t.Errorf("%s: the error took %v", p.name, took)
		}
	}
	// TCP to port 80 still passes.
	if err := tp.dial(80, acceptTimeout); err != nil {
		t.Errorf("port 80: %v", err)
	}
	st := d.readStats(t, stats)
	if st.RejectEvents < uint64(len(probes)) || st.RejectReplies["sent"] != st.RejectEvents || len(st.RejectReplies) != 1 {
		t.Errorf("reject events %d, replies %v", st.RejectEvents, st.RejectReplies)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// rejectProbe is a hand-made datagram the client sends through the router.
type rejectProbe struct {
	name string
	pkt  []byte
}

// probeIPv4 builds a datagram from the client to the server (checksums
// computed; the sending kernel rewrites only the IP checksum).
func probeIPv4(proto uint8, tos uint8, id uint16, frag uint16, l4 []byte) []byte {
	b := make([]byte, 20+len(l4))
	b[0], b[1] = 0x45, tos
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8], b[9] = 64, proto
	c, s := clientAddr.As4(), serverAddr.As4()
	copy(b[12:], c[:])
	copy(b[16:], s[:])
	copy(b[20:], l4)
	binary.BigEndian.PutUint16(b[10:], inetChecksum(b[:20]))
	if frag&0x1fff == 0 {
		switch proto {
		case 6, 17:
			pseudo := append(append(append([]byte{}, b[12:20]...), 0, proto, byte(len(l4)>>8), byte(len(l4))), l4...)
			off := 16
			if proto == 17 {
				off = 6
			}
			binary.BigEndian.PutUint16(b[20+off:], inetChecksum(pseudo))
		case 1:
			binary.BigEndian.PutUint16(b[22:], inetChecksum(l4))
		}
	}
	return b
}

func probeTCP(dport uint16, flags byte, seq, ack uint32, payload string) []byte {
	h := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(h[0:], 41000)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], seq)
	binary.BigEndian.PutUint32(h[8:], ack)
	h[12], h[13] = 5<<4, flags
	binary.BigEndian.PutUint16(h[14:], 29200)
	copy(h[20:], payload)
	return probeIPv4(6, 0, 0x1111, 0x4000, h)
}

func probeUDP(dport uint16, tos uint8, payload []byte) []byte {
	h := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(h[0:], 42000)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(len(h)))
	copy(h[8:], payload)
	return probeIPv4(17, tos, 0x2222, 0, h)
}

func rejectProbes() []rejectProbe {
	big := bytes.Repeat([]byte("0123456789abcdef"), 75) // 1200 bytes
	badSum := probeUDP(86, 0, []byte("bad checksum"))
	badSum[27] ^= 0x5a
	frag := probeUDP(86, 0, []byte("tail of a datagram"))
	binary.BigEndian.PutUint16(frag[6:], 0x0003) // offset 24 bytes, last fragment
	binary.BigEndian.PutUint16(frag[10:], 0)
	binary.BigEndian.PutUint16(frag[10:], inetChecksum(frag[:20]))
	echo := probeIPv4(1, 0, 0x3333, 0, []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'q', 't'})
	unreach := probeIPv4(1, 0, 0x4444, 0, append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, probeUDP(53, 0, nil)...))
	return []rejectProbe{
		{"syn", probeTCP(85, 0x02, 1000, 0, "")},
		{"syn+data+fin", probeTCP(85, 0x03, 0xfffffff0, 0, "hello")},
		{"ack+data", probeTCP(85, 0x18, 5000, 777, "data")},
		{"rst", probeTCP(85, 0x04, 5000, 0, "")},
		{"udp tos 0x1f", probeUDP(86, 0x1f, []byte("hello"))},
		{"udp 1200 bytes", probeUDP(86, 0, big)},
		{"udp bad checksum", badSum},
		{"udp non-first fragment", frag},
		{"icmp echo", echo},
		{"icmp dest-unreachable", unreach},
	}
}

const kernelRejectRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p udp -f -j REJECT --reject-with icmp-port-unreachable
-A FORWARD -p tcp -m tcp --dport 85 -j REJECT --reject-with tcp-reset
-A FORWARD -p udp -m udp --dport 86 -j REJECT --reject-with icmp-port-unreachable
-A FORWARD -p icmp -j REJECT --reject-with icmp-host-prohibited
COMMIT
`

// capture reads the IPv4 packets the client receives on c0.
type capture struct{ fd int }

func (tp *liveTopo) openCapture(t *testing.T) *capture {
	t.Helper()
	fd, err := tp.client.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP)))
	if err != nil {
		t.Fatal(err)
	}
	c0, err := tp.client.Link("c0")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: c0.Index}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &capture{fd: fd}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// replies returns the packets received (not sent) within wait, or until
// 50 ms after the first one.
func (c *capture) replies(t *testing.T, wait time.Duration) [][]byte {
	t.Helper()
	var out [][]byte
	deadline := time.Now().Add(wait)
	buf := make([]byte, 2048)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return out
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_HOST {
			if out == nil {
				if soon := time.Now().Add(50 * time.Millisecond); soon.Before(deadline) {
					deadline = soon
				}
			}
			out = append(out, bytes.Clone(buf[:n]))
		}
	}
}

// drain discards what has arrived.
func (c *capture) drain(t *testing.T) { c.replies(t, 20*time.Millisecond) }

// sendProbes sends each probe from the client with a raw socket and
// collects what comes back for it.
func (tp *liveTopo) sendProbes(t *testing.T, probes []rejectProbe) [][][]byte {
	t.Helper()
	fd, err := tp.client.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	capt := tp.openCapture(t)
	out := make([][][]byte, len(probes))
	for i, p := range probes {
		capt.drain(t)
		if err := unix.Sendto(fd, p.pkt, 0, &unix.SockaddrInet4{Addr: serverAddr.As4()}); err != nil {
			t.Fatalf("%s: send: %v", p.name, err)
		}
		out[i] = capt.replies(t, 400*time.Millisecond)
	}
	return out
}

// normalizeReply zeroes what may differ between the kernel's reply and
// qtables': an ICMP error's IP ID, chosen at random by the kernel (and the
// header checksum that covers it), and the TCP checksum of a RST. The
// kernel leaves the RST's checksum to the device (CHECKSUM_PARTIAL: only
// the pseudo-header sum is in the packet, and a veth never completes it);
// qtables' raw socket sends it complete, which tcpChecksumOK checks.
func normalizeReply(b []byte) []byte {
	b = bytes.Clone(b)
	if len(b) < 20 {
		return b
	}
	switch b[9] {
	case 1:
		b[4], b[5], b[10], b[11] = 0, 0, 0, 0
	case 6:
		if len(b) >= 40 {
			b[36], b[37] = 0, 0
		}
	}
	return b
}

// tcpChecksumOK verifies the TCP checksum of an IPv4 packet without
// options.
func tcpChecksumOK(b []byte) bool {
	pseudo := append(append(append([]byte{}, b[12:20]...), 0, 6, byte((len(b)-20)>>8), byte(len(b)-20)), b[20:]...)
	return inetChecksum(pseudo) == 0
}

// TestLiveRejectMatchesKernel sends the same hand-made packets through the
// router twice, once rejected by the kernel's own REJECT rules and once by
// qtables with the same rules, and compares what the client receives byte
// for byte (an ICMP error's IP ID, chosen at random by the kernel, aside):
// RSTs with their sequence numbers, ICMP errors with their source, TOS and
// quote, and no reply where the kernel sends none (a RST, an ICMP error, a
// non-first fragment).
func TestLiveRejectMatchesKernel(t *testing.T) {
	tp := newLiveTopo(t)
	probes := rejectProbes()
	if out, err := tp.router.Exec([]byte(kernelRejectRules), "iptables-restore"); err != nil {
		t.Fatalf("iptables-restore: %v %s", err, out)
	}
	kernel := tp.sendProbes(t, probes)
	if out, err := tp.router.Exec([]byte("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"), "iptables-restore"); err != nil {
		t.Fatalf("iptables-restore: %v %s", err, out)
	}
	rules := filepath.Join(tp.dir, "rules.v4")
	writeFile(t, rules, kernelRejectRules)
	stats := filepath.Join(tp.dir, "stats.json")
	d := tp.startDaemon(t, "--rules", rules, "--hook", "FORWARD", "--queues", "0", "--stats-file", stats)
	ours := tp.sendProbes(t, probes)

	replied := 0
	for i, p := range probes {
		k, q := kernel[i], ours[i]
		if len(k) > 1 || len(q) > 1 {
			t.Errorf("%s: kernel sent %d replies, qtables %d", p.name, len(k), len(q))
			continue
		}
		if len(k) != len(q) {
			t.Errorf("%s: kernel sent %d replies, qtables %d", p.name, len(k), len(q))
			continue
		}
		if len(k) == 0 {
			t.Logf("%s: no reply from either", p.name)
			continue
		}
		replied++
		if q[0][9] == 6 && !tcpChecksumOK(q[0]) {
			t.Errorf("%s: qtables' RST has a wrong checksum: %x", p.name, q[0])
		}
		if kn, qn := normalizeReply(k[0]), normalizeReply(q[0]); !bytes.Equal(kn, qn) {
			t.Errorf("%s: replies differ\n kernel  %x\n qtables %x", p.name, kn, qn)
		} else {
			t.Logf("%s: %d-byte reply, identical", p.name, len(k[0]))
		}
	}
	// The kernel answers the SYNs, the ACK, the two good UDP datagrams
	// and the echo. The datagram with a bad checksum gets nothing: the
	// kernel had not verified it (NFQUEUE says so), REJECT does.
	if replied != 6 {
		t.Errorf("%d probes answered, want 6", replied)
	}
	st := d.readStats(t, stats)
	if st.RejectReplies["sent"] != 6 || st.RejectReplies["rst"] != 1 || st.RejectReplies["fragment"] != 1 ||
		st.RejectReplies["icmp_error"] != 1 || st.RejectReplies["bad_checksum"] != 1 {
		t.Errorf("reject replies %v", st.RejectReplies)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if left := tp.qtablesChains(t); len(left) > 0 {
		t.Errorf("hooks left: %s", strings.Join(left, "\n"))
	}
}
