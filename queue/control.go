package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/conntrack/kernelct"
	"github.com/qtables/qtables/engine"
)

// The control socket is how `qtables --control SOCK ...` manages the
// running daemon: a unix stream socket, mode 0600 in a 0700 directory, on
// which each connection carries one request and one reply, both JSON.
// A unix socket is a file: it does not belong to a network namespace, so
// the default path names the namespace the daemon filters
// (/run/qtables/NAME.sock, NAME as `ip netns` names it, "default" outside
// any named namespace) and a client anywhere on the host reaches the
// daemon it names.

// ControlDir is the directory of the default control sockets.
const ControlDir = "/run/qtables"

// Control operations.
const (
	OpIptables = "iptables" // Args: an iptables command line
	OpSave     = "save"     // the running rules, iptables-save -c
	OpRestore  = "restore"  // Input: a rules file to swap in
	OpReload   = "reload"   // re-read the rules file (SIGHUP)
	OpCtList   = "ct-list"  // the daemon's flow table, conntrack -L
	OpCtKernel = "ct-list-kernel"
)

// ControlRequest is what a client sends.
type ControlRequest struct {
	Op    string   `json:"op"`
	Args  []string `json:"args,omitempty"`
	Input string   `json:"input,omitempty"`
}

// ControlReply is the daemon's answer: what the command prints on stdout
// and stderr and its exit status (iptables' statuses: 1 when the command
// is refused, 2 for a command line that does not parse).
type ControlReply struct {
	Stdout string `json:"stdout,omitempty"`
	Stderr string `json:"stderr,omitempty"`
	Code   int    `json:"code"`
}

// DefaultControlSocket returns the default control socket path for the
// calling process's network namespace.
func DefaultControlSocket() string {
	return filepath.Join(ControlDir, NetnsName()+".sock")
}

// NetnsName returns the name `ip netns` gives the calling process's
// network namespace (a bind mount in /run/netns with the same inode), or
// "default" when it has none.
func NetnsName() string {
	var self unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return "default"
	}
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return "default"
	}
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil && st.Ino == self.Ino && st.Dev == self.Dev {
			return e.Name()
		}
	}
	return "default"
}

// controlServer serves the control socket; mu serialises its requests.
type controlServer struct {
	d  *Daemon
	ln *net.UnixListener
	mu sync.Mutex
	wg sync.WaitGroup
}

// listenControl creates the control socket at path (its directory 0700,
// the socket 0600). A socket file left by a dead daemon is replaced; one
// a live daemon answers on is an error.
func (d *Daemon) listenControl(path string) (*controlServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another daemon answers on it", path)
	}
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &controlServer{d: d, ln: ln}, nil
}

func (s *controlServer) serve(ctx context.Context) {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handleConn(ctx, c)
		}()
	}
}

func (s *controlServer) close() {
	s.ln.Close() // removes the socket file
	s.wg.Wait()
}

// peerAllowed admits root and the daemon's own user (the socket's mode
// already keeps others out; this holds when the mode was changed).
func peerAllowed(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Geteuid()
}

func (s *controlServer) handleConn(ctx context.Context, c *net.UnixConn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var rep ControlReply
	var req ControlRequest
	switch {
	case !peerAllowed(c):
		rep = ControlReply{Stderr: "qtables: permission denied (root only)\n", Code: 1}
	default:
		if err := json.NewDecoder(io.LimitReader(c, 64<<20)).Decode(&req); err != nil {
			rep = ControlReply{Stderr: fmt.Sprintf("qtables: bad control request: %v\n", err), Code: 2}
		} else {
			s.mu.Lock()
			rep = s.d.control(ctx, &req)
			s.mu.Unlock()
		}
	}
	_ = json.NewEncoder(c).Encode(&rep)
}

// control carries out one request.
func (d *Daemon) control(ctx context.Context, req *ControlRequest) ControlReply {
	var out, errs strings.Builder
	fail := func(code int, err error) ControlReply {
		fmt.Fprintln(&errs, "qtables:", err)
		return ControlReply{Stdout: out.String(), Stderr: errs.String(), Code: code}
	}
	switch req.Op {
	case OpIptables:
		cmd, err := engine.ParseCommand(req.Args)
		if err != nil {
			return fail(2, err)
		}
		if err := d.Command(&out, cmd); err != nil {
			return fail(1, err)
		}
	case OpSave:
		if err := d.WriteCounters(&out); err != nil {
			return fail(1, err)
		}
	case OpRestore:
		if err := d.Restore(strings.NewReader(req.Input)); err != nil {
			return fail(1, err)
		}
	case OpReload:
		if err := d.Reload(); err != nil {
			return fail(1, err)
		}
	case OpCtList:
		if d.ct == nil {
			return fail(1, errors.New("connection tracking is off (--no-conntrack)"))
		}
		n, err := d.WriteConntrackL(&out)
		if err != nil {
			return fail(1, err)
		}
		fmt.Fprintf(&errs, "qtables (conntrack): %d flow entries have been shown.\n", n)
	case OpCtKernel:
		n, err := writeKernelConntrack(ctx, &out)
		if err != nil {
			return fail(1, err)
		}
		fmt.Fprintf(&errs, "qtables (conntrack --kernel): %d flow entries have been shown.\n", n)
	default:
		return fail(2, fmt.Errorf("unknown control operation %q", req.Op))
	}
	return ControlReply{Stdout: out.String(), Stderr: errs.String()}
}

// Command carries out an iptables command on the running rules, printing
// what iptables prints to w. Listings, -C and -Z work on the rules in
// force (the counters are shared with the packet path). Every other
// command is applied to a copy, compiled and swapped in atomically: a
// command that fails, or whose result does not compile, changes nothing.
//
// The copy (engine.Ruleset.Clone) shares the rules the command leaves
// alone, so they keep counting into their own counters across the swap,
// as the kernel's rules do under iptables-nft (a -D of one of two equal
// rules leaves the other with its own counts), and only the chains the
// command changed are compiled again (engine.Recompile): a -A or -D on a
// 10,000-rule chain costs the compile of that chain, not of every table.
func (d *Daemon) Command(w io.Writer, cmd *engine.Command) error {
	switch cmd.Kind {
	case engine.CmdList, engine.CmdListRules, engine.CmdCheck, engine.CmdZero:
		if cmd.Kind == engine.CmdZero || cmd.Zero {
			// No packet may count between a counter's packets and bytes
			// being zeroed (or between listing and zeroing, -L -Z).
			defer d.pauseWorkers()()
		} else {
			d.reloadMu.Lock()
			defer d.reloadMu.Unlock()
		}
		return d.rules.Load().Set.Run(w, cmd)
	}
	d.editMu.Lock()
	defer d.editMu.Unlock()
	cur := d.rules.Load()
	rs := cur.Set.Clone()
	var out bytes.Buffer
	err := rs.Run(&out, cmd)
	if _, werr := w.Write(out.Bytes()); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	prog, err := engine.Recompile(cur.Prog, rs)
	if err != nil {
		return err
	}
	r := rulesOf(rs, prog, cur.Source)
	for _, h := range d.cfg.Hooks.Hooks {
		if !r.HasHook(h) {
			return fmt.Errorf("no table would have a %s chain, which the daemon hooks", h)
		}
	}
	d.swapEdited(r, cmd)
	d.log.Info("rules changed through the control socket", "table", cmd.Table, "chain", cmd.Chain)
	return nil
}

// swapEdited puts r, made from a Clone of the rules in force by cmd, in
// force. The rules are shared and need nothing; the policy counters of
// built-in chains were copied by the Clone, so the packets counted since
// are carried over with the workers paused between two packets (as
// swapRules does). A -P zeroes its chain's policy counters, as
// iptables-nft does, so that chain's are not carried.
func (d *Daemon) swapEdited(r *Rules, cmd *engine.Command) {
	defer d.pauseWorkers()()
	old := d.rules.Load().Set
	for _, nt := range r.Set.Tables {
		ot := old.Table(nt.Name)
		if ot == nil {
			continue
		}
		for _, nc := range nt.Chains {
			if !nc.Builtin || cmd.Kind == engine.CmdPolicy && cmd.Table == nt.Name && cmd.Chain == nc.Name {
				continue
			}
			if oc := ot.Chain(nc.Name); oc != nil && oc.Builtin {
				nc.Counters.Set(oc.Counters.Get())
			}
		}
	}
	d.rules.Store(r)
}

// Restore parses r (iptables-save format) and swaps it in atomically, as
// a reload does; on any error the running rules stay.
func (d *Daemon) Restore(r io.Reader) error {
	rs, err := engine.Parse("<stdin>", r)
	if err != nil {
		return err
	}
	d.editMu.Lock()
	defer d.editMu.Unlock()
	return d.swapIn(rs, d.rules.Load().Source)
}

// swapIn compiles rs and puts it in force if it still has a chain at
// every hooked hook.
func (d *Daemon) swapIn(rs *engine.Ruleset, source string) error {
	r, err := CompileRules(rs, source)
	if err != nil {
		return err
	}
	for _, h := range d.cfg.Hooks.Hooks {
		if !r.HasHook(h) {
			return fmt.Errorf("no table would have a %s chain, which the daemon hooks", h)
		}
	}
	kept := d.swapRules(r)
	d.log.Info("rules changed through the control socket", "counters_kept", kept)
	return nil
}

// writeKernelConntrack lists the kernel's conntrack table of the daemon's
// namespace in conntrack -L layout.
func writeKernelConntrack(ctx context.Context, w io.Writer) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kc, err := kernelct.Open(ctx, kernelct.Options{})
	if err != nil {
		return 0, err
	}
	defer kc.Close()
	es, err := kc.List(ctx)
	if err != nil {
		return 0, err
	}
	var b []byte
	for i := range es {
		b = AppendKernelConntrackL(b[:0], &es[i])
		b = append(b, '\n')
		if _, err := w.Write(b); err != nil {
			return i, err
		}
	}
	return len(es), nil
}

// AppendKernelConntrackL appends a kernel entry as a line of conntrack -L
// (the layout of conntrack.Entry.AppendConntrackL; counters only when the
// kernel keeps them, nf_conntrack_acct=1, as conntrack prints them).
func AppendKernelConntrackL(b []byte, e *kernelct.Entry) []byte {
	p := e.Orig.Proto
	start := len(b)
	b = append(b, kernelProtoName(p)...)
	for len(b)-start < 8 {
		b = append(b, ' ')
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(p), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(e.Timeout/time.Second), 10)
	b = append(b, ' ')
	if p == syscall.IPPROTO_TCP {
		b = append(b, e.TCPState.String()...)
		b = append(b, ' ')
	}
	b = appendKernelTuple(b, &e.Orig)
	if e.HasCounters {
		b = appendKernelCounters(b, e.Packets[0], e.Bytes[0])
	}
	if e.Status&conntrack.StatusSeenReply == 0 {
		b = append(b, "[UNREPLIED] "...)
	}
	b = appendKernelTuple(b, &e.Reply)
	if e.HasCounters {
		b = appendKernelCounters(b, e.Packets[1], e.Bytes[1])
	}
	if e.Status&conntrack.StatusAssured != 0 {
		b = append(b, "[ASSURED] "...)
	}
	b = append(b, "mark="...)
	b = strconv.AppendUint(b, uint64(e.Mark), 10)
	if e.Zone != 0 {
		b = append(b, " zone="...)
		b = strconv.AppendUint(b, uint64(e.Zone), 10)
	}
	return append(b, " use=1"...)
}

func kernelProtoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 33:
		return "dccp"
	case 47:
		return "gre"
	case 58:
		return "icmpv6"
	case 132:
		return "sctp"
	case 136:
		return "udplite"
	}
	return "unknown"
}

func appendKernelTuple(b []byte, t *kernelct.Tuple) []byte {
	b = append(b, "src="...)
	b = t.SrcAddr().AppendTo(b)
	b = append(b, " dst="...)
	b = t.DstAddr().AppendTo(b)
	b = append(b, ' ')
	switch t.Proto {
	case 1, 58:
		b = append(b, "type="...)
		b = strconv.AppendUint(b, uint64(t.ICMPType()), 10)
		b = append(b, " code="...)
		b = strconv.AppendUint(b, uint64(t.ICMPCode()), 10)
		b = append(b, " id="...)
		b = strconv.AppendUint(b, uint64(t.ICMPID()), 10)
		b = append(b, ' ')
	case 6, 17, 33, 132, 136:
		b = append(b, "sport="...)
		b = strconv.AppendUint(b, uint64(t.SrcPort), 10)
		b = append(b, " dport="...)
		b = strconv.AppendUint(b, uint64(t.DstPort), 10)
		b = append(b, ' ')
	}
	return b
}

func appendKernelCounters(b []byte, packets, bytes uint64) []byte {
	b = append(b, "packets="...)
	b = strconv.AppendUint(b, packets, 10)
	b = append(b, " bytes="...)
	b = strconv.AppendUint(b, bytes, 10)
	return append(b, ' ')
}

// ControlCall sends one request to the daemon at the control socket path
// and returns its reply.
func ControlCall(ctx context.Context, path string, req *ControlRequest) (ControlReply, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", path)
	if err != nil {
		return ControlReply{}, fmt.Errorf("control socket %s (is qtables run up?): %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return ControlReply{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	var rep ControlReply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return ControlReply{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	return rep, nil
}
