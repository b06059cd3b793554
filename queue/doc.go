// Package queue is qtables' live filter: it hooks NFQUEUE rules into the
// kernel's netfilter chains, reads the queued packets, judges each one with
// a compiled engine.Program and hands the verdict back to the kernel.
//
// The pieces, from the kernel inward:
//
//   - Hooks (hooks.go) installs one dedicated chain per hook, QTABLES-INPUT,
//     QTABLES-FORWARD, ..., holding the NFQUEUE rule and jumped to from the
//     built-in chain, through the iptables binary (go-iptables). A restart
//     replaces whatever a killed run left behind; --queue-bypass, on by
//     default, makes the kernel accept packets while no reader is bound, so
//     a dead daemon never black-holes a host.
//   - Daemon (daemon.go) binds each queue on a netlink socket of its own
//     (nfq.go): a reader takes the queued packets in batches (recvmmsg),
//     parses them in place, judges them in the kernel's order and sends
//     the batch's verdicts in one datagram, a batch verdict per run of
//     equal verdicts. With --workers N it hands them instead to a pool by
//     a symmetric hash of the 5-tuple (a flow always lands on the same
//     worker, so its packets keep their order). The daemon owns reload
//     (counters of unchanged rules carried over), shutdown and the
//     statistics.
//   - Judge (judge.go) is one worker's state: its own packet.Decoder, View
//     and matchers.Context. Judging a packet decodes it, evaluates the
//     rule-set tables at the packet's hook in the kernel's order (mangle
//     before filter) and collects the verdict, the packet mark and the LOG
//     and REJECT events; it allocates nothing.
//   - The flow table (ct.go): one conntrack.Table shared by every
//     reader and worker, swept by a goroutine with the run's context,
//     sized by Config.CtMax with the kernel's timeouts. A Judge tracks a
//     packet before the rules at the first hooked hook on its path,
//     confirms it on ACCEPT and discards it on DROP (engine.Offline's
//     order), so the stateful matches and CONNMARK see live state. With
//     CtFollowKernel the kernel's destroy events (conntrack/kernelct)
//     expire flows the kernel forgot.
//   - The control socket (control.go): a unix socket, 0600, through which
//     `qtables ctl` runs iptables commands on the running rules (applied
//     to a copy, compiled and swapped in; a failure changes nothing;
//     unchanged rules keep their counters), save, restore, reload and the
//     flow tables as conntrack -L.
//   - LogSink (logsink.go) writes LOG events as the kernel's lines,
//     rate-limited, off the packet path: to a file or stdout, as JSON
//     lines, or to the local syslog socket (facility kern, the rule's
//     level).
//   - REJECT (reject.go) builds the reply the kernel's REJECT sends, TCP
//     RST or ICMP destination unreachable, under the kernel's conditions,
//     and sends it through a raw socket in the daemon's namespace.
//   - The fast path (offload.go): hook chains accept connections carrying
//     qtables' connmark bits before queueing; a flow settled by the
//     inspection depth is handed to the kernel with an NF_REPEAT verdict.
//   - Metrics (metrics.go) exports the statistics and every rule's counters
//     to Prometheus at scrape time.
//
// Every iptables call happens in the calling process's network namespace:
// run the daemon inside the namespace it should filter (`ip netns exec`).
package queue
