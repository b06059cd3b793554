package kernelct

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlSocket is a NETLINK_NETFILTER socket driven directly with recvfrom
// and sendto through the runtime poller (so deadlines and Close interrupt
// a blocked read).
//
// The bridge does its own socket I/O instead of using
// mdlayher/netlink.Conn.Execute for two reasons. ctnetlink answers a GET
// with a single message flagged NLM_F_MULTI and no NLMSG_DONE after it,
// which makes that package's receive loop (v1.8 and later) wait forever
// for the rest of a multi-part reply. And a request interrupted by its
// context leaves a late reply in the socket; matching replies by sequence
// number here lets the next request skip it instead of failing. Messages
// are still decoded by ti-mo/conntrack.
type nlSocket struct {
	f   *os.File
	rc  syscall.RawConn
	pid uint32 // the socket's port id: replies are addressed to it
	seq uint32
	buf []byte
}

// nlRecvBuf holds the largest datagram the kernel sends: a dump packs
// messages into skbs of at most 32 KiB (or the largest buffer a reader
// offered before), events are single messages.
const nlRecvBuf = 64 << 10

// newNLSocket opens a netfilter netlink socket in the namespace ns.
func newNLSocket(ns *nsHandle) (*nlSocket, error) {
	fd, err := ns.socket()
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kernelct: bind netlink socket: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kernelct: netlink socket name: %w", err)
	}
	nsa, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		unix.Close(fd)
		return nil, fmt.Errorf("kernelct: netlink socket has address %T", sa)
	}
	// A non-blocking descriptor makes os.NewFile register it with the
	// runtime poller.
	f := os.NewFile(uintptr(fd), "netlink-netfilter")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("kernelct: netlink socket: %w", err)
	}
	return &nlSocket{f: f, rc: rc, pid: nsa.Pid, seq: uint32(time.Now().UnixNano()), buf: make([]byte, nlRecvBuf)}, nil
}

func (s *nlSocket) Close() error { return s.f.Close() }

func (s *nlSocket) SetDeadline(t time.Time) error { return s.f.SetDeadline(t) }

// control runs fn on the descriptor (socket options).
func (s *nlSocket) control(fn func(fd int) error) error {
	var ferr error
	if err := s.rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// send writes one request to the kernel.
func (s *nlSocket) send(b []byte) error {
	var serr error
	err := s.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("kernelct: netlink send: %w", err)
	}
	return nil
}

// recv reads one datagram into the socket's buffer and returns it; it is
// valid until the next recv. With wait false it does not block: an empty
// queue is unix.EAGAIN. Errors are returned unwrapped (ENOBUFS, EAGAIN,
// os.ErrDeadlineExceeded, os.ErrClosed).
func (s *nlSocket) recv(wait bool) ([]byte, error) {
	var (
		n    int
		rerr error
	)
	err := s.rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), s.buf, unix.MSG_TRUNC)
		return !wait || rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, err
	}
	if n > len(s.buf) {
		return nil, fmt.Errorf("kernelct: netlink datagram of %d bytes truncated to %d", n, len(s.buf))
	}
	return s.buf[:n], nil
}

// Netlink message header layout (struct nlmsghdr, host byte order).
const nlmsgHeaderLen = 16

// nlMsg is one message of a received datagram; Data aliases the socket's
// buffer.
type nlMsg struct {
	typ   uint16
	flags uint16
	seq   uint32
	pid   uint32
	data  []byte
}

// message converts m for ti-mo/conntrack's decoder.
func (m *nlMsg) message() netlink.Message {
	return netlink.Message{
		Header: netlink.Header{
			Length:   uint32(nlmsgHeaderLen + len(m.data)),
			Type:     netlink.HeaderType(m.typ),
			Flags:    netlink.HeaderFlags(m.flags),
			Sequence: m.seq,
			PID:      m.pid,
		},
		Data: m.data,
	}
}

// nextMsg splits the first message off a datagram.
func nextMsg(b []byte) (m nlMsg, rest []byte, err error) {
	if len(b) < nlmsgHeaderLen {
		return nlMsg{}, nil, fmt.Errorf("kernelct: short netlink message (%d bytes)", len(b))
	}
	l := int(binary.NativeEndian.Uint32(b[0:4]))
	if l < nlmsgHeaderLen || l > len(b) {
		return nlMsg{}, nil, fmt.Errorf("kernelct: netlink message length %d in a %d byte datagram", l, len(b))
	}
	m = nlMsg{
		typ:   binary.NativeEndian.Uint16(b[4:6]),
		flags: binary.NativeEndian.Uint16(b[6:8]),
		seq:   binary.NativeEndian.Uint32(b[8:12]),
		pid:   binary.NativeEndian.Uint32(b[12:16]),
		data:  b[nlmsgHeaderLen:l],
	}
	aligned := (l + 3) &^ 3
	if aligned > len(b) {
		aligned = len(b)
	}
	return m, b[aligned:], nil
}

// errnoOf decodes the error code of an NLMSG_ERROR or NLMSG_DONE message:
// 0 or a positive errno.
func errnoOf(m *nlMsg) (syscall.Errno, error) {
	if len(m.data) < 4 {
		if m.typ == unix.NLMSG_DONE {
			return 0, nil
		}
		return 0, errors.New("kernelct: short netlink error message")
	}
	code := int32(binary.NativeEndian.Uint32(m.data[:4]))
	return syscall.Errno(-code), nil
}

// kernelError is an error the kernel answered a request with (as opposed
// to an error of the socket itself). It unwraps to the errno.
type kernelError struct{ errno syscall.Errno }

func (e kernelError) Error() string { return e.errno.Error() }
func (e kernelError) Unwrap() error { return e.errno }

// Reply kinds a request waits for.
type replyKind uint8

const (
	replyOne  replyKind = iota // one data message (GET), or an error
	replyAck                   // NLMSG_ERROR with code 0 (requests with NLM_F_ACK)
	replyDump                  // data messages until NLMSG_DONE
)

// Execute sends req (a complete message whose sequence number it fills
// in) and passes the data messages of the kernel's answer to fn until the
// answer of kind is complete. Messages with another sequence number (the
// late answer to an interrupted request) are skipped. A kernel error is
// returned as a kernelError.
func (s *nlSocket) Execute(req []byte, kind replyKind, fn func(*nlMsg) error) error {
	s.seq++
	seq := s.seq
	binary.NativeEndian.PutUint32(req[8:12], seq)
	if err := s.send(req); err != nil {
		return err
	}
	for {
		b, err := s.recv(true)
		if err != nil {
			return fmt.Errorf("kernelct: netlink receive: %w", err)
		}
		for len(b) > 0 {
			var m nlMsg
			if m, b, err = nextMsg(b); err != nil {
				return err
			}
			if m.seq != seq || m.pid != s.pid {
				continue
			}
			switch m.typ {
			case unix.NLMSG_NOOP:
				continue
			case unix.NLMSG_ERROR, unix.NLMSG_DONE:
				errno, err := errnoOf(&m)
				if err != nil {
					return err
				}
				if errno != 0 {
					return kernelError{errno}
				}
				if m.typ == unix.NLMSG_DONE || kind == replyAck {
					return nil
				}
				continue
			}
			if err := fn(&m); err != nil {
				return err
			}
			if kind == replyOne {
				return nil
			}
		}
	}
}

// socket creates a non-blocking netfilter netlink socket in n. When the
// calling thread is already in n it is created right there, which needs
// no privilege beyond what ctnetlink asks (CAP_NET_ADMIN); otherwise a
// locked thread enters n with setns(2) (CAP_SYS_ADMIN), creates it and
// returns to its own namespace. A thread that cannot return is never
// unlocked, so the runtime discards it instead of reusing it.
func (n *nsHandle) socket() (int, error) {
	mk := func() (int, error) {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
		if err != nil {
			return -1, fmt.Errorf("kernelct: netlink socket: %w", err)
		}
		return fd, nil
	}
	runtime.LockOSThread()
	if n.isThread() {
		fd, err := mk()
		runtime.UnlockOSThread()
		return fd, err
	}
	runtime.UnlockOSThread()
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("kernelct: open own network namespace: %w", err)}
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("kernelct: enter network namespace: %w", err)}
			return
		}
		fd, err := mk()
		if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
			if fd >= 0 {
				unix.Close(fd)
			}
			ch <- result{-1, fmt.Errorf("kernelct: return to own network namespace: %w", rerr)}
			return // still locked: the thread dies with the goroutine
		}
		runtime.UnlockOSThread()
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// isThread reports whether the calling thread is in n.
func (n *nsHandle) isThread() bool {
	var st unix.Stat_t
	return unix.Stat("/proc/thread-self/ns/net", &st) == nil && st.Dev == n.dev && st.Ino == n.ino
}
