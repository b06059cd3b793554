package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/internal/netns"
)

// ClientNet holds the addresses of the stateful cases' clients: FW routes
// it back to SRC, so that replies from the sink side cross FW in the
// other direction. Every other address is on the sink side.
var ClientNet = netip.MustParsePrefix("10.0.0.0/8")

// srcGateway is the address FW's route to ClientNet points at: a0's side
// of the SRC<->FW link, with a permanent neighbour entry (SRC itself needs
// no address; it drops whatever FW forwards to it).
var srcGateway = netip.MustParseAddr("100.64.0.1")

// StateTopology is the Topology with both ends injecting: clients' frames
// enter FW on b0 from SRC, servers' and routers' frames enter on b1 from
// SINK, and FW routes each direction to the other side. Connection
// tracking is on in FW as soon as a loaded rule uses it (and with it
// defragmentation before FORWARD, so the stateful cases send no
// fragments).
type StateTopology struct {
	*Topology
	// SinkMAC and FWOutMAC are the source and destination MACs of frames
	// injected on the sink side (c1's and b1's addresses).
	SinkMAC, FWOutMAC net.HardwareAddr

	sinkConn *netns.PacketConn
}

// NewStateTopology builds the network; the caller must Close it.
func NewStateTopology() (_ *StateTopology, err error) {
	topo, err := NewTopology()
	if err != nil {
		return nil, err
	}
	t := &StateTopology{Topology: topo}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	// SRC drops everything it receives, as SINK does: neither end ever
	// answers (no ICMP errors, no resets) behind the test's back.
	if _, err = t.Src.Exec([]byte(dropAll), "iptables-restore"); err != nil {
		return nil, err
	}
	if err = t.FW.AddNeigh(srcGateway, t.SrcMAC, InIface); err != nil {
		return nil, err
	}
	if err = t.FW.AddRoute(ClientNet, srcGateway, InIface); err != nil {
		return nil, err
	}
	sink, err := t.Sink.Link(sinkDev)
	if err != nil {
		return nil, err
	}
	b1, err := t.FW.Link(OutIface)
	if err != nil {
		return nil, err
	}
	t.SinkMAC, t.FWOutMAC = sink.MAC, b1.MAC
	if t.sinkConn, err = t.Sink.OpenPacket(sinkDev); err != nil {
		return nil, err
	}
	return t, nil
}

const dropAll = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -j DROP\nCOMMIT\n"

// Close removes the namespaces.
func (t *StateTopology) Close() error {
	var errs []error
	if t.sinkConn != nil {
		errs = append(errs, t.sinkConn.Close())
		t.sinkConn = nil
	}
	return errors.Join(append(errs, t.Topology.Close())...)
}

// FlushConntrack empties FW's connection table (conntrack -F), so that a
// case starts from nothing, as `qtables test` does.
func (t *StateTopology) FlushConntrack() error {
	if _, err := exec.LookPath("conntrack"); err != nil {
		return errors.New("conformance: the conntrack tool (conntrack-tools) is not installed")
	}
	_, err := t.FW.Exec(nil, "conntrack", "-F")
	return err
}

// ListConntrack returns FW's connection table as `conntrack -L` prints it.
func (t *StateTopology) ListConntrack() (string, error) {
	out, err := t.FW.Exec(nil, "conntrack", "-L")
	return string(out), err
}

// SendBoth writes each frame to its side (fromSink: SINK's c1, else SRC's
// a0) in order, pausing pace between frames, and waits until deadline for
// FW's FORWARD instrument to count all of them. It returns the time each
// frame was written. The writes come from one OS thread bound to one CPU:
// each side's frames are processed on the writing CPU's backlog, so one
// CPU keeps the two sides in the order written.
func (t *StateTopology) SendBoth(frames [][]byte, fromSink []bool, pace, deadline time.Duration) ([]time.Time, error) {
	base, err := t.ForwardCount()
	if err != nil {
		return nil, err
	}
	times := make([]time.Time, len(frames))
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread dies with the goroutine: its affinity never leaks.
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err == nil {
			for cpu := 0; cpu < 1024; cpu++ {
				if set.IsSet(cpu) {
					var one unix.CPUSet
					one.Set(cpu)
					if err := unix.SchedSetaffinity(0, &one); err != nil {
						errc <- fmt.Errorf("bind the sending thread to CPU %d: %w", cpu, err)
						return
					}
					break
				}
			}
		}
		for i, f := range frames {
			if i > 0 && pace > 0 {
				time.Sleep(pace)
			}
			conn := t.conn
			if fromSink[i] {
				conn = t.sinkConn
			}
			times[i] = time.Now()
			if err := conn.WriteFrame(f); err != nil {
				errc <- fmt.Errorf("frame %d: %w", i, err)
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	want := base + uint64(len(frames))
	end := time.Now().Add(deadline)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		n, err := t.ForwardCount()
		if err != nil {
			return nil, err
		}
		switch {
		case n == want:
			return times, nil
		case n > want:
			return nil, fmt.Errorf("FORWARD counted %d packets, %d sent: unexpected traffic in FW", n-base, len(frames))
		case time.Now().After(end):
			return nil, fmt.Errorf("only %d of %d packets reached FORWARD within %v", n-base, len(frames), deadline)
		}
		time.Sleep(wait)
	}
}

// StateQtablesArgs are the arguments of the qtables run that must
// reproduce the kernel's counters for a stateful case: FORWARD, clients'
// packets arriving on b0 and leaving on b1, everything else arriving on
// b1 and, when addressed to a client, leaving on b0.
func StateQtablesArgs(rulesPath, pcapPath string) []string {
	return []string{"test", "--rules", rulesPath, "--table", "filter", "--chain", "FORWARD",
		"--in-interface", InIface, "--out-interface", OutIface,
		"--in-interface-map", "0.0.0.0/0=" + OutIface, "--in-interface-map", ClientNet.String() + "=" + InIface,
		"--out-interface-map", ClientNet.String() + "=" + InIface,
		"--counters", "--flows", pcapPath}
}

// runQtablesArgs runs bin with args and returns its standard output.
func runQtablesArgs(bin string, args []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %v\nstderr:\n%s", bin, strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}
