// Package kernelct is the bridge between qtables' own flow table
// (package conntrack) and the kernel's conntrack table, over ctnetlink.
// The live daemon uses it to hand a settled flow back to the kernel fast
// path (SetMark: a rule matching the connection mark then accepts the
// flow's later packets without queueing them to userspace) and to keep
// its own table in step with the kernel's (Watch: a flow the kernel
// forgot is expired in qtables' table too).
//
// # Using it
//
//	kc, err := kernelct.Open(ctx, kernelct.Options{})  // this namespace
//	defer kc.Close()
//	w, err := kc.Watch(ctx, kernelct.WatchOptions{}, kernelct.Expirer(
//		func(t kernelct.Tuple) { table.Delete(t) },   // destroy events
//		func() { resync(kc.List(ctx)) }))              // events were lost
//	...
//	e, dir, err := kc.LookupPacket(ctx, view)          // either direction
//	err = kc.SetMark(ctx, e.Orig, 0x100, 0x100)        // offload bit
//
// Tuples are the userspace table's conntrack.Tuple (the type fits: same
// fields, same ICMP encoding of identifier and type<<8|code), so tuples
// pass between the two tables unchanged. The one difference is in what
// each table keys on: the kernel keeps SCTP and DCCP ports, the userspace
// table tracks those protocols by addresses alone; Canonical converts, and
// Expirer applies it.
//
// # Namespaces
//
// A netlink socket belongs for its whole life to the network namespace of
// the thread that created it. Open works on Options.Namespace (a path such
// as netns.Namespace.Path() or /proc/PID/ns/net; OpenInNamespace is the
// shorthand) or, when that is empty, on the namespace of the calling OS
// thread, so a caller inside netns.Namespace.Do gets the namespace it
// entered. Either way the Conn keeps a descriptor of the namespace and
// creates every later socket (Watch) in it, from any goroutine: on the
// calling thread when that thread is already there, otherwise on a locked
// thread that enters the namespace with setns(2) and returns (the technique
// of netns.Namespace.Do and mdlayher/socket). ctnetlink needs CAP_NET_ADMIN
// in the namespace; entering another namespace needs CAP_SYS_ADMIN.
//
// # Requests
//
// Requests go over one socket per Conn, serialised by a mutex (each is
// one round trip: about 10 µs for a Lookup, BenchmarkLookup). The socket
// I/O is done here, with recvfrom on a non-blocking descriptor in the
// runtime poller, rather than with mdlayher/netlink's Execute: ctnetlink
// answers a GET with one message flagged NLM_F_MULTI and no NLMSG_DONE
// after it, which that package's receive loop waits on forever (from v1.8
// on). Replies are matched to requests by sequence number, so the late
// answer to a request whose context was cancelled is skipped by the next
// request instead of being taken for its answer (an interrupted dump
// replaces the socket: the kernel refuses a second dump while one is
// unread). Contexts bound every request: the deadline is the socket's,
// cancellation moves it into the past.
//
// List dumps the table (both families); Lookup is a ctnetlink GET, which
// the kernel resolves by either tuple of a connection, so the packet's own
// tuple finds its entry in both directions (TupleOf computes it from a
// packet.View without allocating). Delete and Flush delete and produce
// destroy events.
//
// SetMark sets mark = mark&^mask | value&mask. The kernel applies
// CTA_MARK with CTA_MARK_MASK atomically as (mark & ^mask) ^ value, so the
// value is sent pre-masked. Older kernels ignore CTA_MARK_MASK on update
// and replace the whole mark; as no version check is reliable across
// distribution kernels, the Conn probes by default (Options.MarkMask): the
// first masked call that can tell the two behaviours apart (bits outside
// the mask are set) reads the mark before and after, repairs a replaced
// mark, and remembers the answer; until then each masked call reads the
// mark first (about 13 µs instead of 4 µs, BenchmarkSetMark). On a kernel
// that ignores the mask, masked calls read, merge and write: that is racy
// (a kernel-side CONNMARK rule changing other bits between the read and
// the write is undone) and counted in Stats.MarkRMW. A full mask is a
// plain write everywhere; MarkMaskKernel skips the probing where the
// kernel is known to be recent.
//
// Requests are encoded by hand (appending attributes to one buffer, about
// 70 ns, checked byte for byte against ti-mo/netfilter's encoder) and
// answers decoded by ti-mo/conntrack (about 3 µs, the bulk of a Lookup's
// allocations).
//
// # Events
//
// Watch opens a socket of its own, joins the NFNLGRP_CONNTRACK_* groups
// asked for (destroy only by default), and calls one callback from one
// goroutine until its context ends or the Conn closes. There is no queue
// between the socket and the callback: a slow callback leaves the events
// in the socket's receive buffer, which Watch makes large (16 MiB by
// default, with SO_RCVBUFFORCE so that a privileged daemon is not capped
// by net.core.rmem_max; SO_RCVBUF otherwise). When it still overflows,
// the kernel drops events and reports ENOBUFS on the next read. The
// watcher counts each one (Watcher.Overruns, Stats.Overruns), logs it
// through slog, and calls the callback with EventLost before reading on:
// the consumer then knows that it missed destroy events and re-lists the
// kernel table (Expirer calls its resync function). Nothing is lost
// silently.
//
// WatchOptions.ReliableDestroy additionally sets NETLINK_BROADCAST_ERROR,
// as conntrackd does for reliable event delivery: a destroy event the
// kernel cannot deliver keeps the dying entry on its side and is sent
// again later, so destroy events survive a stalled consumer (the kernel
// tests show all of a burst arriving through a 2 KiB buffer). The price is
// kernel memory held for a consumer that stops reading.
//
// The kernel only generates events for entries that carry its event
// extension. With net.netfilter.nf_conntrack_events=2 (the default since
// Linux 6.0) an entry gets it only if a listener exists when it is
// created, so a watcher must be running before the traffic whose end it
// is to report (or the sysctl set to 1).
//
// # Tests
//
// The kernel tests (gated by kerneltest.Require: root, ip, iptables) build
// two namespaces joined by a veth pair, track flows in the "server" one
// with an iptables conntrack rule and nf_conntrack_acct=1, and drive real
// TCP and UDP traffic between them: listing (tuples, state, status,
// timeout, exact byte counters), lookups by tuple and by packet in both
// directions, masked and read-modify-write marks (checked with the
// conntrack tool when installed), delete and flush with their destroy
// events, an entry expiring on its own, a destroy event expiring the same
// flow in a userspace conntrack.Table, ENOBUFS provoked with the smallest
// receive buffer and a stalled callback, and reliable destroy delivery.
// Unit tests cover the encoding against a decoder-independent encoding of
// the kernel's attribute layout, the mark probe against a fake kernel with
// either mark semantics, cancellation, and the read loop with an injected
// ENOBUFS.
package kernelct
