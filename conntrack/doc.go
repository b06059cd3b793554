// Package conntrack is qtables' own connection tracking table: the state
// that -m state, -m conntrack, connlimit, connmark, connbytes and CONNMARK
// read and write, decided the way Linux's nf_conntrack decides it.
//
// # Using it
//
// A Table is created with New and is safe for concurrent use by a pool of
// workers. For every packet the caller calls Track (or TrackInto) before
// the rules run, with the packet's time: the table never reads a clock, so
// an offline run is driven by capture timestamps and tests by a fake clock.
//
//	r := table.Track(view, now)   // state updated now, as in PREROUTING
//	... evaluate the rules with r.Info, r.Dir, r.Entry ...
//	if accepted {
//		if !r.Confirm(now) { drop }  // the kernel's __nf_conntrack_confirm
//	} else {
//		r.Discard()
//	}
//
// A worker that receives packets in batches (an NFQUEUE read) calls
// TrackBatch instead, then Confirm or Discard per result: the same
// decisions, packet by packet in order, several times faster on a large
// table (see Cost below).
//
// This mirrors the kernel's order. An existing connection's state (TCP
// state, counters, timeout, SEEN_REPLY) changes inside Track, before any
// rule sees the packet. A packet that starts a connection gets a new
// entry that is not yet in the table (Entry.Confirmed() is false, and, as
// in the kernel, its timer has not started: Timeout reports 0). Only
// Confirm, called when the packet survived every hook, inserts it; Discard
// forgets it, so a first packet dropped by the rules leaves the next one
// NEW again. Confirm fails when a concurrent first packet of the same
// connection was confirmed first: UDP merges into the winner (the kernel's
// allow_clash), TCP, ICMP and generic protocols drop the loser, as the
// kernel does. Confirm and Discard are no-ops on packets of confirmed
// connections, so callers may call one of them for every packet.
//
// A process that is done with a table calls Close: a large table keeps
// its slabs outside the Go heap (see Layout), which the garbage collector
// does not see, so a dropped table that is never closed is released only
// whenever a collection happens to find it unreachable.
//
// Result.Entry is a copy of the connection taken under its lock, so
// matches read it without synchronisation. Result.Ref names the live
// entry for the targets that write to it (CONNMARK through UpdateMark,
// labels, the L7 slot); a Ref checks a generation number, so a Ref to an
// entry that expired and whose slot was reused fails instead of writing
// to another connection.
//
// # Layout
//
// The table is split into shards (Config.Shards; by default 16 per CPU,
// at least 64), each with its own mutex, index and slab. A flow's shard is
// chosen by a hash of its tuple that is the same for both directions (the two
// endpoints are put in canonical order, an ICMP reply type is folded to
// its query type), so both directions take the same single lock and the
// packet path never takes a global one. The hash is keyed per table
// (seeded at New) so that traffic cannot aim at one shard or probe run.
//
// Each shard's index is an open-addressing, linear-probing array of 8-byte
// slots (32 bits of the hash, slab index); at most 3/4 full, deleted from
// by backward shifting (no tombstones, so lookups never degrade with
// churn). A lookup compares the stored hash first and touches an entry
// only on a hash match; it matches a packet's tuple against the entry's
// original tuple and that tuple's inverse, which yields the packet's
// direction. The index is sized up front for the shard's share of
// MaxEntries (up to 1M entries in total) so that a table filling to its
// limit does not rehash on the packet path; beyond that it doubles,
// rehashing from the stored hashes without touching entries. Slots are
// written with atomic stores and the current array is published through
// an atomic pointer, so that TrackBatch's prefetch stage may read them
// without the lock (it only acts on them as hints).
//
// Entries live in per-shard slabs of 32 KiB chunks that never move, and
// freed entries go to a per-shard free list: in steady state (churn
// included) no packet allocates. A connection is stored in three parts:
// a 128-byte flow (tuple, times, counters, status, mark, labels), kept
// 128-byte aligned so that it is one aligned pair of cache lines, which
// the CPU fetches together; for TCP a 64-byte slot with the window
// tracker's state, next to its flow in the same 384-byte group of two;
// and an 8-byte L7 slot, read only for connections that set it. The reply
// tuple is not stored: without NAT it is always the original's inverse.
// A chunk holds 162 connections (32400 bytes, which the allocator's
// 32 KiB size class holds with 1% slack), 200 bytes each. None of it holds
// pointers, so the garbage collector never scans the slabs. With the
// index at 3/8 to 3/4 occupancy a flow costs 200 + 10.7..21.3 bytes, at
// most 221.3 bytes (223.6 in mapped memory, where a chunk takes 8 whole
// pages; TestEntrySize checks the budget; BenchmarkMemoryPerFlow measures
// 220 bytes per flow at 1M flows, either way). An Entry, what callers
// get, is a copy of the flow plus the L7 slot and the TCP state (144
// bytes).
//
// Once a table's slabs and indexes outgrow 8 MiB, new chunks and index
// arrays come from memory the table maps itself (anonymous, private,
// 64 MiB at a time, 2 MiB aligned) and advises for transparent huge pages
// (MADV_HUGEPAGE, which the kernel honours in its default "madvise"
// mode), and the sweeper moves what was allocated before onto it, a few
// chunks per lock hold: a lookup then costs no page walks (see Cost).
// Nothing there holds a Go pointer, so the garbage collector need not see
// it. An outgrown index array is kept for reuse (cut into chunks) until
// Close, because TrackBatch's prefetch stage may still read it. Close
// unmaps everything; a table dropped without Close is unmapped by a
// cleanup once the garbage collector finds it unreachable. With
// Config.HeapMemory, on systems other than Linux, or if mapping or
// advising fails, everything stays on the Go heap.
//
// Every entry keeps the original tuple (the reply tuple is its inverse),
// the TCP tracker's state (including both directions' window data), creation and last-packet times, the expiry
// time, packets and bytes per direction (the IP total length, as the
// kernel counts skb->len), the connection mark, 128 label bits, the kernel's
// status bits (SEEN_REPLY, ASSURED, CONFIRMED, ...) and an 8-byte L7 slot
// (a uint32 classification id and 4 bytes of classifier state) for a
// later application-layer classifier.
//
// # Cost
//
// With 1M flows the table is far larger than the CPU caches, and a
// packet's lookup-and-update touches three random cache lines: its index
// cell, then the two of its flow (a TCP packet also its TCP slot's). On
// 4 KiB pages each is a TLB miss too, and the page walk costs about as
// much as the miss (slabs and index span some 55,000 pages); on 2 MiB
// pages they span 110, which the TLB holds. Hence the mapped memory of a
// large table (see Layout). One packet at a time (Track, TrackInto) the
// dependent misses dominate. TrackBatch overlaps the misses of up to 32
// packets, and then the CPU work (parsing, hashing, the lock, the state
// update, copying the Entry out) sets most of the rate.
//
// BenchmarkTrackBatch, BenchmarkTrackEstablished and BenchmarkTrackTCP1M
// measure on the Go heap (Config.HeapMemory) and on huge pages side by
// side; BenchmarkRandomLoads isolates the page walks (random loads over
// 256 MiB: 16 to 63 ns each on 4 KiB pages, 6 to 23 ns on 2 MiB pages).
// The figures below are thread CPU time per packet (the wall clock also
// counts waiting for a CPU) on a 2-vCPU KVM guest (Xeon, 2.1 GHz, no PMU)
// that other work kept busy (load 2 to 4), 1M flows drawn uniformly unless
// said otherwise, each packet's figure including 15 to 25 ns of the
// benchmark building it (BenchmarkFillView). Old is the code before the
// per-packet work below was cut, new is this one; the two test binaries
// ran alternately, six times each, twice over (medians, then the range):
//
//	2 MiB pages            old                 new                new/old
//	UDP, batches of 32     182 (153-206)       158 (97-184)       0.87
//	                       178 (148-220)       120 (100-202)      0.67
//	UDP, Zipf, batches     168 (116-175)        82 (81-162)       0.49
//	                       173 (115-210)       109 (82-172)       0.63
//	TCP, batches of 32     206 (186-283)       155 (136-205)      0.75
//	                       205 (174-296)       193 (155-222)      0.94
//	UDP, one at a time     505 (470-560)       453 (400-473)      0.90
//	                       503 (436-547)       464 (374-540)      0.92
//	UDP, 1K flows, batches 145 (119-173)       109 (82-170)       0.75
//	                       119 (106-186)        91 (74-142)       0.77
//
// (Four more alternated runs of the batched UDP cases alone: uniform
// 167-197 old, 107-142 new; Zipf 131-172 old, 86-110 new.) On the Go heap
// the batched ratios were 0.53 to 0.96.
//
// BenchmarkTrackBatch1M runs the batched uniform case alone, five times
// on one table (huge pages), which shows the spread better. Old and new
// alternating, three times each, medians of the five runs (fastest):
// 1M flows, old 215, 144, 142 (141), new 101.5, 99.5, 98.8 (97.3); the
// same on 1K flows, old 140, 113, 101 (99), new 72, 70.5, 70.1 (69.5).
// With another benchmark busy on the other vCPU the new code took 105 to
// 125 ns at 1M. So a batched packet at 1M flows costs about 100 ns here,
// of which 15 to 25 ns are the benchmark's, when the machine is left to
// it; Zipf traffic stays below that, and sharing the machine (its caches
// and memory) costs 10 to 25 percent more.
//
// Where the time went, found with pprof and perf (timer sampling: the
// guest has no hardware counters) and measured a step at a time, old
// and new binaries alternating (batches of 32, uniform, huge pages,
// fastest of several runs):
//
//   - parse wrote each IPv4-mapped address as five stores (the compiler
//     splits a big-endian word with a constant half) and the hash at
//     once loaded it as one word, which cannot be forwarded from the
//     store buffer and waits for the stores to drain: a tenth of an
//     in-cache packet. One word store each: 144 -> 118 ns at 1M.
//   - s.chunks[i].groups[j]... made the compiler check the chunk pointer
//     for nil by loading from the chunk's first line, a cache line of its
//     own on every entry access (the prefetch stage spent three quarters
//     of its time there). Entry addresses are now computed from the
//     chunk's address without loading it. With the lock's fast path,
//     the hash and the prefetch peek inlined and the per-packet pkt
//     zeroing dropped: 84 -> 80 ns in cache.
//   - Calls: find, the UDP handler and the copy-out are spelled out in
//     resolve, and the three stages loop over the chunk instead of being
//     called per packet (Go's calls save every live register): 75 -> 70
//     ns in cache, 104 -> 96 at 1M.
//   - Stage 3 probed the index again. It now takes the cell stage 2
//     found if the cell, read again under the lock, still holds it and
//     its entry matches the packet (entries are unique per tuple, so
//     that is what the probe would find): 103 -> 100 ns at 1M.
//   - The copy of the flow into Result.Entry loaded 16 bytes at a time
//     over fields the update had just stored 8 (status: 4) bytes at a
//     time, again defeating store forwarding; copyFlow loads them as
//     they were stored: 1 to 2 ns.
//
// Measured and left as they are, in one process on one table, variants
// alternating: not copying the Entry at all would save 4 ns (it is 144
// bytes, and matches need all of it); no shard lock would save 6 ns at
// 1M and 10 in cache (TryLock and Unlock are a locked instruction each,
// 18 to 20 ns together by themselves; a compare-and-swap with a plain
// store to unlock measured 14.5 to 16, which would take a lock of our own
// whose waiters poll). The spin-then-sleep wrapper is off the fast path
// (one TryLock, inlined). The per-packet work reads no clock and does no
// other atomic read-modify-write; its remaining bounds checks are
// predicted branches. Moving packets through the stages one at a time
// (stage 1 eight or twelve packets ahead of stage 3) cost 5 to 15 ns
// more than chunks of 32, interleaving stage 2 with stage 1 changed
// nothing, PREFETCHT1 or PREFETCHNTA instead of PREFETCHT0 cost 4 to 15
// ns, and prefetching only a flow's first line (leaving the second to
// the adjacent-line prefetcher) 40 ns. What a batched packet on 1M flows
// still pays beyond one in cache, 25 to 30 ns, shows up in the prefetch
// instructions themselves, which wait for the core's miss handling (fill
// buffers, page walks): the memory system again, not CPU work.
//
// # Expiry, limits and counters
//
// Expiry needs no scan on the packet path. A lookup that meets an expired
// entry removes it (so correctness never depends on the sweeper, as in the
// kernel); every new connection sweeps 4 slab positions of its shard, so
// expired entries are reclaimed at the rate new ones arrive; and Sweep (run
// periodically by Run, with a context.Context lifetime and a clock
// function) walks each shard without ever holding its lock for more than
// a short step on memory already in cache: it prefetches 64 flows without
// the lock, takes the lock to note which of them expired, lets go, hashes
// the victims and prefetches their index cells, then takes the lock again
// to unlink them 16 at a time, skipping any that a packet refreshed or
// that were reused in between (the generation tells). A packet never
// waits on a whole-shard scan: a step is about half a microsecond of work.
// (Memory the sweeper moves or reserves, see Layout, is backed by the
// kernel before the lock is taken, as faulting in a huge page can take
// milliseconds.) What a packet can still meet is a sweeper that the OS
// deschedules while it holds a lock; the steps make that rare, not
// impossible. A packet that finds its lock held retries for some 30 µs
// before it sleeps, since a sleeping thread may wait a scheduling tick to
// be woken. BenchmarkSweep1M reports the sweeper's holds while 1M flows
// expire, and BenchmarkTrackDuringSweep the latency of Track calls on
// other flows meanwhile, next to a control that sweeps another table. On
// the machine of the Cost section: holds of about 1 µs at the median and
// 14 to 40 µs at the 99.9th percentile by the wall clock; the longest,
// from 0.1 to 24 ms by the wall clock but 50 to 240 µs of CPU time, are
// the sweeper descheduled inside a hold. Track calls: 1 to 10 µs at the
// 99.9th percentile, and at worst 0.1 ms when the machine was quiet, 4 to
// 12 ms when it was busy, as in the control sweeping another table (0.1
// to 16 ms) and, busy, even with no sweep at all: the worst pause there
// is the machine's.
// Unconfirmed entries that were neither confirmed nor discarded within
// 60 s (a caller bug) are reclaimed too.
//
// MaxEntries is nf_conntrack_max (default 262144). A new connection beyond
// it first tries the kernel's early drop: among the entries near the new
// tuple's place in its shard's index it evicts one that is not ASSURED
// (reaping expired ones met on the way). If there is none the packet is
// dropped before the rules (Result.Drop) and, like the kernel's gc worker
// after such a failure, the next Sweep passes also evict unassured and
// closing TCP connections while the table is above 95% of the limit.
//
// Stats returns the counters: lookups, finds, new, inserted, insert
// failures, clash merges, invalid packets, drops, early drops, expiries,
// deletions and abandoned entries. Each shard counts under its own lock
// (an atomic add per packet costs more than a cached lookup); Stats reads
// them shard by shard.
//
// # Semantics
//
// The trackers follow nf_conntrack in Linux 6.x (nf_conntrack_core.c,
// nf_conntrack_proto_tcp.c, _udp.c, _icmp.c):
//
//   - Lookup order and ctinfo: a packet matching the reply tuple is
//     ESTABLISHED (reply); matching the original tuple it is ESTABLISHED
//     once the connection has SEEN_REPLY, else NEW. SEEN_REPLY is set after
//     the protocol handler accepted a reply-direction packet.
//   - TCP: the flag validity table (SYN+FIN, FIN alone, no flags, ... are
//     INVALID), the full state transition table (sNO..sS2 in both
//     directions), mid-stream pickup (tcp_loose=1 by default: an ACK with no
//     entry creates an ESTABLISHED entry with liberal window checking and a
//     300 s timeout until answered), and the complete tcp_in_window: the
//     four sequence/ack bounds, window scaling negotiated in the handshake,
//     SACK blocks, the overshoot workaround, retransmission counting
//     (tcp_max_retrans) and be_liberal. Also: ignored packets (a SYN or
//     SYN/ACK out of sync, noted so that the answering SYN/ACK resyncs),
//     RFC 5961 challenge ACKs in LAST_ACK, simultaneous open, a SYN
//     reopening a closed or TIME_WAIT connection (the old entry is deleted
//     and the SYN is NEW), RST checks (a RST below the window is INVALID; a
//     RST with an inexact sequence number keeps the state), a RST before
//     any reply deletes the connection at once, a retransmitted SYN
//     does not renew the timeout, ASSURED on the ACK after SYN_RECV or on
//     the answer to a picked-up connection, and the timeout rules
//     (max_retrans, unacknowledged data, zero window, RST -> CLOSE's timeout;
//     out-of-window FIN/RST from both sides shortens an assured connection).
//   - UDP: 30 s until a reply; after a reply, a packet more than 2 s into
//     the connection makes it a stream (ASSURED, 120 s). UDP-Lite likewise
//     (assured at the first packet after a reply; checksum mandatory).
//   - ICMP: echo, timestamp, information and address-mask requests create
//     connections (30 s, not removed after the reply, so duplicates pass);
//     their replies without a request, other types, and types above 18 are
//     INVALID. An ICMP error (types 3, 4, 5, 11, 12) is RELATED to the
//     connection its quoted header names (the quoted tuple inverted, in
//     either direction) if the error's destination is that connection's
//     destination in the direction found; otherwise INVALID. Errors are
//     neither accounted nor refresh the connection.
//   - Other protocols: one connection per address pair and protocol, 600 s.
//   - Timeouts are the kernel defaults (Config.Timeouts overrides them),
//     relative to confirmation for a new connection, as in the kernel.
//   - When the table is full the kernel allocates before the protocol
//     decides whether the packet may create a connection, so even packets
//     that would only be INVALID (a stray FIN, an echo reply) are dropped;
//     so are they here.
//
// # Differences from the kernel
//
//   - No NAT, helpers or expectations: SNAT/DNAT/EXPECTED are never set and
//     RELATED comes only from ICMP errors. No zones. IPv4 only for now (the
//     layout and hash take IPv6 addresses; no ICMPv6 tracker yet).
//   - SCTP, DCCP and GRE are tracked as generic protocols (addresses and
//     protocol, 600 s) where the kernel has trackers of their own; GRE
//     entries print without srckey/dstkey.
//   - No defragmentation: a non-first fragment is INVALID (the kernel
//     tracks the reassembled datagram); a first fragment is tracked by its
//     headers and counted with its own length.
//   - Checksums are verified only with Config.Checksum (the kernel checks at
//     PREROUTING by default), because captures taken on a sending host carry
//     checksums the NIC fills in later. Packets the capture cut are not
//     checked; their lengths come from the IP header, as the kernel's do.
//   - The quoted header of an ICMP error must be IPv4 with a header length
//     of at least 20 bytes; the kernel reads whatever is there (which names
//     no connection anyway).
//   - Early drop looks at up to 16 entries in the 64 index slots after the
//     new tuple's home slot, in its shard, and evicts one unassured entry;
//     the kernel looks at 8 hash buckets and evicts every unassured entry of
//     the first bucket holding any.
//   - Accounting is always on (the kernel's nf_conntrack_acct defaults to
//     off; conntrack -L then omits packets= and bytes=), and
//     WriteConntrackL always prints the counters. It orders entries by
//     creation time, not hash order, so that offline runs are reproducible.
//   - Times are nanoseconds of the caller's clock, not jiffies: timeouts
//     are exact; printed timeouts are whole seconds rounded down, like
//     nf_ct_expires / HZ.
//   - An unconfirmed entry never confirmed or discarded is reclaimed after
//     60 s of packet time; the kernel frees it with its skb.
package conntrack
