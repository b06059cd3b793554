package conntrack

import (
	"runtime"
	"time"
)

// Timeouts are the per-protocol, per-state lifetimes of an idle connection
// (the net.netfilter.nf_conntrack_*_timeout* sysctls). A zero field means
// the kernel's default, listed with each field.
type Timeouts struct {
	TCPSynSent     time.Duration // tcp_timeout_syn_sent, 120 s
	TCPSynRecv     time.Duration // tcp_timeout_syn_recv, 60 s
	TCPEstablished time.Duration // tcp_timeout_established, 5 days
	TCPFinWait     time.Duration // tcp_timeout_fin_wait, 120 s
	TCPCloseWait   time.Duration // tcp_timeout_close_wait, 60 s
	TCPLastAck     time.Duration // tcp_timeout_last_ack, 30 s
	TCPTimeWait    time.Duration // tcp_timeout_time_wait, 120 s
	TCPClose       time.Duration // tcp_timeout_close, 10 s
	TCPSynSent2    time.Duration // SYN_SENT2 (no sysctl of its own), 120 s
	// TCPMaxRetrans caps the timeout once tcp_max_retrans retransmissions
	// were seen, and while a zero window is advertised (300 s).
	TCPMaxRetrans time.Duration
	// TCPUnacknowledged caps the timeout while data is unacknowledged, and
	// for connections picked up mid-stream until a reply (300 s).
	TCPUnacknowledged time.Duration
	UDP               time.Duration // udp_timeout, 30 s: unreplied, or replied within 2 s
	UDPStream         time.Duration // udp_timeout_stream, 120 s
	ICMP              time.Duration // icmp_timeout, 30 s
	Generic           time.Duration // generic_timeout, 600 s
}

// DefaultTimeouts returns the kernel's default timeouts (6.x).
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSynSent:        120 * time.Second,
		TCPSynRecv:        60 * time.Second,
		TCPEstablished:    5 * 24 * time.Hour,
		TCPFinWait:        120 * time.Second,
		TCPCloseWait:      60 * time.Second,
		TCPLastAck:        30 * time.Second,
		TCPTimeWait:       120 * time.Second,
		TCPClose:          10 * time.Second,
		TCPSynSent2:       120 * time.Second,
		TCPMaxRetrans:     300 * time.Second,
		TCPUnacknowledged: 300 * time.Second,
		UDP:               30 * time.Second,
		UDPStream:         120 * time.Second,
		ICMP:              30 * time.Second,
		Generic:           600 * time.Second,
	}
}

// Defaults for Config fields left zero.
const (
	// DefaultMaxEntries is nf_conntrack_max on a 64-bit machine with more
	// than 4 GiB of memory (262144 buckets, one entry per bucket).
	DefaultMaxEntries = 262144
	// DefaultTCPMaxRetrans is nf_conntrack_tcp_max_retrans.
	DefaultTCPMaxRetrans = 3
	// DefaultSweepInterval is how often Run starts a pass over the table.
	DefaultSweepInterval = time.Second
)

// Config configures a Table. The zero Config is the kernel's defaults.
// Boolean fields are named so that false is the kernel default.
type Config struct {
	// MaxEntries is nf_conntrack_max: the entry count beyond which a new
	// connection first tries to evict an unassured one and is dropped if
	// it cannot. 0 means DefaultMaxEntries; negative means no limit.
	MaxEntries int
	// Shards is the number of independently locked parts of the table,
	// rounded up to a power of two. 0 picks a default from GOMAXPROCS.
	Shards int
	// Timeouts; zero fields take the kernel defaults.
	Timeouts Timeouts
	// TCPNoPickup disables picking up connections mid-stream
	// (nf_conntrack_tcp_loose=0): a TCP packet without SYN that matches
	// no entry is INVALID instead of creating an ESTABLISHED entry.
	TCPNoPickup bool
	// TCPBeLiberal accepts out-of-window TCP packets
	// (nf_conntrack_tcp_be_liberal=1); only RSTs are still checked.
	TCPBeLiberal bool
	// TCPIgnoreInvalidRST accepts RSTs whose sequence number is below the
	// window (nf_conntrack_tcp_ignore_invalid_rst=1).
	TCPIgnoreInvalidRST bool
	// TCPMaxRetrans is nf_conntrack_tcp_max_retrans; 0 means 3.
	TCPMaxRetrans int
	// Checksum verifies TCP, UDP and ICMP checksums and declares packets
	// with a bad one INVALID, as the kernel does at PREROUTING with
	// nf_conntrack_checksum=1 (its default). It is off by default here
	// because captures taken on a sending host carry checksums that the
	// NIC fills in later. Packets not captured in full are not checked.
	Checksum bool
	// SweepInterval is the pause between passes of Run's background
	// sweeper; 0 means DefaultSweepInterval.
	SweepInterval time.Duration
	// HeapMemory keeps all of the table on the Go heap. By default a
	// table whose slabs and index outgrow 8 MiB takes them from memory
	// mapped for 2 MiB pages, which a lookup on a large table reaches
	// faster (see the package doc's Cost section); that memory is
	// outside the Go heap (runtime.MemStats and GOMEMLIMIT do not see it)
	// and is returned by Table.Close.
	HeapMemory bool
}

// timeout indexes into Table.timeouts.
const (
	toUDP = int(tcpNumStates) + iota
	toUDPStream
	toICMP
	toGeneric
	toRetrans
	toUnack
	numTimeouts
)

// resolve returns the timeouts as nanoseconds indexed by TCP state, then
// the to* constants.
func (tm Timeouts) resolve() [numTimeouts]int64 {
	def := DefaultTimeouts()
	pick := func(v, d time.Duration) int64 {
		if v <= 0 {
			return int64(d)
		}
		return int64(v)
	}
	var r [numTimeouts]int64
	r[TCPSynSent] = pick(tm.TCPSynSent, def.TCPSynSent)
	r[TCPSynRecv] = pick(tm.TCPSynRecv, def.TCPSynRecv)
	r[TCPEstablished] = pick(tm.TCPEstablished, def.TCPEstablished)
	r[TCPFinWait] = pick(tm.TCPFinWait, def.TCPFinWait)
	r[TCPCloseWait] = pick(tm.TCPCloseWait, def.TCPCloseWait)
	r[TCPLastAck] = pick(tm.TCPLastAck, def.TCPLastAck)
	r[TCPTimeWait] = pick(tm.TCPTimeWait, def.TCPTimeWait)
	r[TCPClose] = pick(tm.TCPClose, def.TCPClose)
	r[TCPSynSent2] = pick(tm.TCPSynSent2, def.TCPSynSent2)
	// TCPNone never has a timeout of its own; the kernel's table starts at
	// SYN_SENT. Give it SYN_SENT's, which is what an entry created in NONE
	// and then rejected would never use anyway.
	r[TCPNone] = r[TCPSynSent]
	r[toUDP] = pick(tm.UDP, def.UDP)
	r[toUDPStream] = pick(tm.UDPStream, def.UDPStream)
	r[toICMP] = pick(tm.ICMP, def.ICMP)
	r[toGeneric] = pick(tm.Generic, def.Generic)
	r[toRetrans] = pick(tm.TCPMaxRetrans, def.TCPMaxRetrans)
	r[toUnack] = pick(tm.TCPUnacknowledged, def.TCPUnacknowledged)
	return r
}

func (c *Config) shards() int {
	n := c.Shards
	if n <= 0 {
		n = 16 * runtime.GOMAXPROCS(0)
		if n < 64 {
			n = 64
		}
	}
	p := 1
	for p < n && p < 1<<16 {
		p <<= 1
	}
	return p
}
