package queue

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// counters are the daemon's own statistics, updated atomically by readers
// and workers.
type counters struct {
	received    atomic.Uint64
	accepted    atomic.Uint64
	dropped     atomic.Uint64
	marked      atomic.Uint64
	undecodable atomic.Uint64
	unsupported atomic.Uint64
	noChain     atomic.Uint64
	panics      atomic.Uint64
	rejects     atomic.Uint64
	logEvents   atomic.Uint64
	verdictErrs atomic.Uint64
	enobufs     atomic.Uint64
	readErrs    atomic.Uint64
	offloaded   atomic.Uint64
	ctDrops     atomic.Uint64
	ctExpired   atomic.Uint64
	reloads     atomic.Uint64
	// verdictDgrams and verdictMsgs count the datagrams of verdicts sent
	// and the verdict messages in them.
	verdictDgrams atomic.Uint64
	verdictMsgs   atomic.Uint64
	reloadFails   atomic.Uint64
}

// Stats is a snapshot of the daemon's statistics. Its JSON form is what
// --stats-file holds.
type Stats struct {
	// Received counts packets read from all queues; Accepted and Dropped
	// the verdicts given (DROP includes REJECT).
	Received uint64 `json:"received"`
	Accepted uint64 `json:"accepted"`
	Dropped  uint64 `json:"dropped"`
	// Marked counts verdicts that carried a new packet mark.
	Marked uint64 `json:"marked"`
	// Undecodable counts packets that were not IPv4 datagrams the rules
	// can judge; Unsupported verdicts other than ACCEPT/DROP from the
	// rules; NoChain packets from a hook no table of the rules has (all
	// three get the default verdict, NoChain gets ACCEPT as the kernel
	// gives a hook without rules).
	Undecodable uint64 `json:"undecodable"`
	Unsupported uint64 `json:"unsupported_verdicts"`
	NoChain     uint64 `json:"no_chain"`
	// Panics counts packets whose judging panicked (they got the default
	// verdict).
	Panics uint64 `json:"panics"`
	// RejectEvents counts REJECT targets hit (the packet is dropped);
	// RejectReplies what became of them, by outcome: "sent", a reason the
	// kernel sends no reply ("fragment", "rst", "icmp_error",
	// "broadcast", "source", "bad_checksum", "truncated", "not_tcp",
	// "rate_limited"), or "failed". LogEvents counts LOG targets hit,
	// LogWritten the lines written, LogDropped those lost to the rate limit
	// or a full buffer.
	RejectEvents  uint64            `json:"reject_events"`
	RejectReplies map[string]uint64 `json:"reject_replies,omitempty"`
	LogEvents     uint64            `json:"log_events"`
	LogWritten    uint64            `json:"log_written"`
	LogDropped    uint64            `json:"log_dropped"`
	// VerdictErrors counts verdicts the kernel refused (the packet had
	// gone, the socket failed); ENOBUFS counts receive buffer overruns
	// (the kernel dropped queued packets it could not deliver); ReadErrors
	// other receive errors.
	VerdictErrors uint64 `json:"verdict_errors"`
	// VerdictDatagrams and VerdictMessages count what carried the
	// verdicts: a datagram per receive batch (or per drained worker
	// queue), holding one message per packet or, in order, one batch
	// verdict per run of packets with the same verdict.
	VerdictDatagrams uint64 `json:"verdict_datagrams"`
	VerdictMessages  uint64 `json:"verdict_messages"`
	ENOBUFS          uint64 `json:"enobufs"`
	ReadErrors       uint64 `json:"read_errors"`
	// Offloaded counts flows handed to the kernel's connmark fast path
	// (their later packets are never queued; the hook chain's connmark
	// rule counts them).
	Offloaded uint64 `json:"offloaded_flows"`
	// CtDrops counts packets connection tracking dropped (table full, or
	// a lost race of two first packets); CtKernelExpired the flows
	// expired because the kernel's table destroyed them.
	CtDrops         uint64 `json:"ct_drops"`
	CtKernelExpired uint64 `json:"ct_kernel_expired"`
	// Conntrack is the flow table's size and counters.
	Conntrack *CtStats `json:"conntrack,omitempty"`
	// Reloads and ReloadFailures count rule reloads.
	Reloads        uint64 `json:"reloads"`
	ReloadFailures uint64 `json:"reload_failures"`
	// Kernel is the kernel's view of each queue, from
	// /proc/net/netfilter/nfnetlink_queue (absent when unreadable).
	Kernel []KernelQueue `json:"kernel,omitempty"`
}

func (c *counters) snapshot() Stats {
	return Stats{
		Received: c.received.Load(), Accepted: c.accepted.Load(), Dropped: c.dropped.Load(),
		Marked: c.marked.Load(), Undecodable: c.undecodable.Load(), Unsupported: c.unsupported.Load(),
		NoChain: c.noChain.Load(), Panics: c.panics.Load(), RejectEvents: c.rejects.Load(),
		LogEvents: c.logEvents.Load(), VerdictErrors: c.verdictErrs.Load(), ENOBUFS: c.enobufs.Load(),
		ReadErrors: c.readErrs.Load(), VerdictDatagrams: c.verdictDgrams.Load(), VerdictMessages: c.verdictMsgs.Load(), Offloaded: c.offloaded.Load(), CtDrops: c.ctDrops.Load(), CtKernelExpired: c.ctExpired.Load(), Reloads: c.reloads.Load(), ReloadFailures: c.reloadFails.Load(),
	}
}

// KernelQueue is one line of /proc/net/netfilter/nfnetlink_queue.
type KernelQueue struct {
	Queue uint16 `json:"queue"`
	// PortID is the netlink port of the bound program.
	PortID uint32 `json:"port_id"`
	// Waiting is the number of packets queued and not yet given a verdict.
	Waiting uint32 `json:"waiting"`
	// QueueDropped counts packets the kernel dropped because the queue
	// was full (queue_dropped); UserDropped those it failed to send to the
	// program, mostly because the socket's receive buffer was full
	// (user_dropped).
	QueueDropped uint32 `json:"queue_dropped"`
	UserDropped  uint32 `json:"user_dropped"`
	// IDSequence is the last packet id the kernel handed out.
	IDSequence uint32 `json:"id_sequence"`
}

// ProcQueuePath is where the kernel reports its queues (per network
// namespace: the reading thread's).
const ProcQueuePath = "/proc/net/netfilter/nfnetlink_queue"

// ReadKernelQueues reads the kernel's queue table. A missing file (the
// nfnetlink_queue module not loaded) gives no queues and no error.
func ReadKernelQueues(path string) ([]KernelQueue, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseKernelQueues(f)
}

// ParseKernelQueues parses the kernel's queue table: per line queue_number
// peer_portid queue_total copy_mode copy_range queue_dropped user_dropped
// id_sequence 1 (net/netfilter/nfnetlink_queue.c, seq_show).
func ParseKernelQueues(r io.Reader) ([]KernelQueue, error) {
	var out []KernelQueue
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			return nil, fmt.Errorf("nfnetlink_queue: short line %q", sc.Text())
		}
		var n [8]uint64
		for i := range n {
			v, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("nfnetlink_queue: field %d of %q: %w", i+1, sc.Text(), err)
			}
			n[i] = v
		}
		if n[0] > 0xffff {
			return nil, fmt.Errorf("nfnetlink_queue: queue number %d out of range", n[0])
		}
		out = append(out, KernelQueue{
			Queue: uint16(n[0]), PortID: uint32(n[1]), Waiting: uint32(n[2]),
			QueueDropped: uint32(n[5]), UserDropped: uint32(n[6]), IDSequence: uint32(n[7]),
		})
	}
	return out, sc.Err()
}
