// Package netns creates throwaway Linux network namespaces for tests that
// need the real kernel: the conformance suite, the live daemon's tests and
// `qtables bench --kernel`.
//
// Everything goes through named namespaces (`ip netns add`, bind-mounted
// under /run/netns) so a human can inspect a failing run with
// `ip netns exec`. The package never changes the root namespace: links are
// created from inside a test namespace with both veth ends placed in test
// namespaces at creation time, sysctls are written from a thread that has
// entered the namespace, and commands run under `ip netns exec`.
//
// Names have the form PREFIX-PID-SEQ-ROLE. The PID lets CleanStale remove
// the namespaces of a killed earlier run without touching those of a run
// that is still alive.
package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// runDir is where `ip netns add` bind-mounts named namespaces.
const runDir = "/run/netns"

// cmdTimeout bounds every external command so a wedged tool fails the test
// instead of hanging it.
const cmdTimeout = 30 * time.Second

// seq numbers the namespaces this process creates.
var seq atomic.Uint64

// Namespace is a named network namespace owned by this process. Close
// deletes it; every method fails after Close.
type Namespace struct {
	name string

	mu     sync.Mutex
	closed bool
}

// Check reports why this process cannot create namespaces: not root, or
// the ip tool is missing. A nil error means New can be expected to work.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("netns: must run as root (network namespaces and iptables need CAP_SYS_ADMIN and CAP_NET_ADMIN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("netns: the ip tool (iproute2) is not installed")
	}
	return nil
}

// New creates a namespace named PREFIX-PID-SEQ-ROLE. The prefix must be
// the same for all namespaces of one suite so CleanStale can find leftovers;
// role only makes the name readable ("fw", "src").
//
// IPv6 is disabled in the new namespace before any link exists, so links
// moved in later never send router solicitations or DAD probes that would
// disturb packet counts.
func New(prefix, role string) (*Namespace, error) {
	if strings.ContainsAny(prefix+role, "/ \t\n") || prefix == "" {
		return nil, fmt.Errorf("netns: bad name parts %q %q", prefix, role)
	}
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
	if role != "" {
		name += "-" + role
	}
	if _, err := run(nil, "ip", "netns", "add", name); err != nil {
		return nil, err
	}
	n := &Namespace{name: name}
	for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := n.SetSysctl(k, "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// Name returns the namespace's name as `ip netns` knows it.
func (n *Namespace) Name() string { return n.name }

// Path returns the namespace's bind-mount path, usable with setns(2).
func (n *Namespace) Path() string { return filepath.Join(runDir, n.name) }

// Close deletes the namespace (and with it its links, routes and
// netfilter tables; a veth pair dies when either end's namespace goes).
// It is idempotent and safe for concurrent use.
func (n *Namespace) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	_, err := run(nil, "ip", "netns", "del", n.name)
	return err
}

func (n *Namespace) check() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("netns %s: already closed", n.name)
	}
	return nil
}

// Exec runs a program inside the namespace (`ip netns exec`), feeding it
// stdin if non-nil, and returns its standard output. A non-zero exit is an
// error that carries the command line and its standard error.
func (n *Namespace) Exec(stdin []byte, prog string, args ...string) ([]byte, error) {
	if err := n.check(); err != nil {
		return nil, err
	}
	return run(stdin, "ip", append([]string{"netns", "exec", n.name, prog}, args...)...)
}

// IP runs `ip -n NAME ARGS...`: iproute2 enters the namespace itself, which
// is cheaper than Exec and never acts on the root namespace.
func (n *Namespace) IP(args ...string) ([]byte, error) {
	if err := n.check(); err != nil {
		return nil, err
	}
	return run(nil, "ip", append([]string{"-n", n.name}, args...)...)
}

// SetSysctl writes a per-namespace sysctl such as "net.ipv4.ip_forward" or
// "net.ipv4.conf.b0.rp_filter" (dots separate path elements, so interface
// names containing dots are not supported). Only keys under net. are
// accepted: other sysctls are global and writing one would change the host.
func (n *Namespace) SetSysctl(key, value string) error {
	p, err := sysctlPath(key)
	if err != nil {
		return err
	}
	return n.Do(func() error {
		if err := os.WriteFile(p, []byte(value+"\n"), 0); err != nil {
			return fmt.Errorf("netns %s: sysctl %s=%s: %w", n.name, key, value, err)
		}
		return nil
	})
}

// Sysctl reads a per-namespace sysctl (see SetSysctl for the key form).
func (n *Namespace) Sysctl(key string) (string, error) {
	p, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	var v []byte
	err = n.Do(func() error {
		var err error
		v, err = os.ReadFile(p)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("netns %s: sysctl %s: %w", n.name, key, err)
	}
	return strings.TrimSpace(string(v)), nil
}

func sysctlPath(key string) (string, error) {
	if !strings.HasPrefix(key, "net.") || strings.Contains(key, "/") || strings.Contains(key, "..") {
		return "", fmt.Errorf("netns: sysctl %q is not a per-namespace net.* key", key)
	}
	return "/proc/sys/" + strings.ReplaceAll(key, ".", "/"), nil
}

// AddVeth creates a veth pair with end nameA in a and end nameB in b. The
// command runs inside a (`ip -n A link add nameA type veth peer name nameB
// netns B`), so neither end ever exists in the root namespace.
func AddVeth(a *Namespace, nameA string, b *Namespace, nameB string) error {
	if err := b.check(); err != nil {
		return err
	}
	_, err := a.IP("link", "add", nameA, "type", "veth", "peer", "name", nameB, "netns", b.name)
	return err
}

// LinkUp sets a link up.
func (n *Namespace) LinkUp(dev string) error {
	_, err := n.IP("link", "set", "dev", dev, "up")
	return err
}

// SetMTU sets a link's MTU.
func (n *Namespace) SetMTU(dev string, mtu int) error {
	_, err := n.IP("link", "set", "dev", dev, "mtu", strconv.Itoa(mtu))
	return err
}

// AddAddr assigns an address with its prefix length to a link.
func (n *Namespace) AddAddr(dev string, p netip.Prefix) error {
	_, err := n.IP("addr", "add", p.String(), "dev", dev)
	return err
}

// AddRoute adds a route to dst via gateway gw on dev. An invalid dst
// (the zero Prefix) means the default route; an invalid gw means a direct
// route.
func (n *Namespace) AddRoute(dst netip.Prefix, gw netip.Addr, dev string) error {
	args := []string{"route", "add"}
	if dst.IsValid() {
		args = append(args, dst.String())
	} else {
		args = append(args, "default")
	}
	if gw.IsValid() {
		args = append(args, "via", gw.String())
	}
	args = append(args, "dev", dev)
	_, err := n.IP(args...)
	return err
}

// AddNeigh adds a PERMANENT neighbour entry, so forwarding to addr never
// waits for (or sends) ARP.
func (n *Namespace) AddNeigh(addr netip.Addr, mac net.HardwareAddr, dev string) error {
	_, err := n.IP("neigh", "replace", addr.String(), "lladdr", mac.String(), "dev", dev, "nud", "permanent")
	return err
}

// Link describes a network device as `ip -j link show` reports it.
type Link struct {
	Index int
	Name  string
	MAC   net.HardwareAddr
	MTU   int
}

// Link returns the index, MAC address and MTU of dev.
func (n *Namespace) Link(dev string) (Link, error) {
	out, err := n.IP("-j", "link", "show", "dev", dev)
	if err != nil {
		return Link{}, err
	}
	var links []struct {
		Index   int    `json:"ifindex"`
		Name    string `json:"ifname"`
		Address string `json:"address"`
		MTU     int    `json:"mtu"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return Link{}, fmt.Errorf("netns %s: parse ip -j link output: %w", n.name, err)
	}
	if len(links) != 1 {
		return Link{}, fmt.Errorf("netns %s: ip -j link show %s returned %d links", n.name, dev, len(links))
	}
	l := links[0]
	mac, err := net.ParseMAC(l.Address)
	if err != nil {
		return Link{}, fmt.Errorf("netns %s: link %s: %w", n.name, dev, err)
	}
	return Link{Index: l.Index, Name: l.Name, MAC: mac, MTU: l.MTU}, nil
}

// Do runs fn on an OS thread that has entered the namespace. The thread's
// own namespace is restored afterwards; if that fails, the thread stays
// locked and is discarded when fn's goroutine ends, so no other goroutine
// ever runs in the wrong namespace. Sockets created inside fn belong to the
// namespace for their whole life.
func (n *Namespace) Do(fn func() error) error {
	if err := n.check(); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Leaving the goroutine while still locked makes the runtime
		// terminate the thread; UnlockOSThread is only called once the
		// original namespace is back.
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open own namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(n.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: open: %w", n.name, err)
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: setns: %w", n.name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netns %s: restore thread namespace: %w", n.name, err))
			return // thread stays locked and dies
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Socket creates a socket inside the namespace and returns its descriptor,
// which the caller must close.
func (n *Namespace) Socket(domain, typ, proto int) (int, error) {
	fd := -1
	err := n.Do(func() error {
		var err error
		fd, err = unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("netns %s: socket: %w", n.name, err)
	}
	return fd, nil
}

// PacketConn writes complete link-layer frames to one device through an
// AF_PACKET socket. It never receives: the socket is bound with protocol 0,
// so the kernel queues nothing to it.
type PacketConn struct {
	fd  int
	dev string
}

// OpenPacket opens a sending AF_PACKET socket on dev inside the namespace.
func (n *Namespace) OpenPacket(dev string) (*PacketConn, error) {
	l, err := n.Link(dev)
	if err != nil {
		return nil, err
	}
	fd, err := n.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: l.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netns %s: bind packet socket to %s: %w", n.name, dev, err)
	}
	return &PacketConn{fd: fd, dev: dev}, nil
}

// WriteFrame sends one frame (destination MAC first). The kernel sends it
// out unchanged; no checksum or length is fixed up.
func (c *PacketConn) WriteFrame(frame []byte) error {
	for {
		n, err := unix.Write(c.fd, frame)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("packet socket on %s: write %d bytes: %w", c.dev, len(frame), err)
		}
		if n != len(frame) {
			return fmt.Errorf("packet socket on %s: short write %d of %d", c.dev, n, len(frame))
		}
		return nil
	}
}

// Close closes the socket.
func (c *PacketConn) Close() error {
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// CleanStale deletes namespaces named PREFIX-PID-... whose PID is no longer
// running: leftovers of a run that was killed before its cleanup ran.
// Namespaces of live processes (a concurrent run) are left alone. It returns
// the names it deleted.
func CleanStale(prefix string) ([]string, error) {
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list %s: %w", runDir, err)
	}
	var deleted []string
	var errs []error
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if _, err := run(nil, "ip", "netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, e.Name())
	}
	return deleted, errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || err == unix.EPERM
}

// run executes a command with a timeout and returns its standard output.
func run(stdin []byte, prog string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &CmdError{Args: append([]string{prog}, args...), Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.Bytes(), nil
}

// CmdError is a failed external command.
type CmdError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *CmdError) Error() string {
	msg := fmt.Sprintf("%s: %v", strings.Join(e.Args, " "), e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *CmdError) Unwrap() error { return e.Err }
