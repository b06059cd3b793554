// Package conformance proves qtables against the Linux kernel: random
// filter-table rule sets and random packets go through the kernel's FORWARD
// chain and through `qtables test`, and every counter must agree.
//
// # How a case runs
//
// GenerateRules draws a rule set (iptables-restore text) and GeneratePackets
// draws packets aimed at its rules; Generate does both from one seed, so a
// case is replayed from its seed alone (GenerateAt, from a seed and the
// clock its time rules are built around). RunCase loads the rule set into the
// FW namespace of a Topology (SRC -> FW -> SINK, see NewTopology), writes the
// packets' Ethernet frames to SRC's veth through an AF_PACKET socket, waits
// until FW's mangle FORWARD counter has counted every one (polling with a
// deadline, never sleeping a fixed time), and reads `iptables-save -c -t
// filter`. The same frames go into a pcap file for
//
//	qtables test --rules RULES --table filter --chain FORWARD \
//	    --in-interface b0 --out-interface b1 --counters PCAP
//
// and Compare requires every line but the '#' comments to be equal: chain
// lines with policy counters, rule lines with counters, and therefore also
// iptables-save's canonical spelling of every rule.
//
// FW's raw OUTPUT chain drops everything FW sends itself (REJECT's ICMP
// errors and resets), so filter OUTPUT counts nothing, as in qtables. LOG
// rules write nothing outside the root namespace (nf_log_all_netns is left
// alone); they only count.
//
// # What the kernel drops before FORWARD
//
// Found by experiment (TestKernelDropClasses keeps checking it) on Linux
// 6.18 with the topology's settings (forwarding on, rp_filter off, no
// conntrack): these never reach the FORWARD hook, so the generator never
// produces them.
//
//   - Source 0.0.0.0, 127.0.0.0/8, 224.0.0.0/4 or 255.255.255.255 (martian
//     source). Other 0.0.0.0/8 sources and 240.0.0.0/4 sources are
//     forwarded by this kernel; the generator still avoids all of 0/8
//     because older kernels treat the whole block as martian.
//   - Destination 0.0.0.0 (and, as above, 0/8 avoided), 127.0.0.0/8,
//     224.0.0.0/4 (multicast routing is off), 255.255.255.255 (local
//     broadcast). 240.0.0.0/4 up to 255.255.255.254 is forwarded.
//   - Any address of the link network 100.64.0.0/24: FW's own addresses are
//     local (INPUT, or a martian source), the subnet broadcasts are
//     broadcast.
//   - TTL 0 or 1 (time exceeded in ip_forward, before the hook).
//   - A datagram longer than the egress MTU (1500) with DF set
//     (fragmentation needed, before the hook). Without DF it is forwarded
//     whole and fragmented after FORWARD, so the generator keeps those (up
//     to the ingress MTU, 4000).
//   - A bad IPv4 header checksum, an IHL below 5, a total length beyond the
//     frame: dropped in ip_rcv. Malformed IP options (bad lengths or
//     pointers): parameter problem.
//   - Loose and strict source route options (accept_source_route is 0 for
//     "all" in a new namespace) and the CIPSO option (no CIPSO DOI
//     configured).
//   - Frames not addressed to b0's MAC (broadcast, multicast or another
//     host's MAC): not PACKET_HOST, so not forwarded. Hence every packet in
//     FORWARD has pkttype unicast.
//
// Everything else is kept, notably: non-first fragments (FW loads no
// conntrack-dependent match, so nf_defrag_ipv4 is not active in its
// namespace and fragments pass one by one; a lone fragment with offset 1,
// one ending beyond 64 KiB and one with no data all reach FORWARD), first
// fragments, the reserved ("evil") flag, DF, record route, timestamp,
// router alert, stream id, unknown and NOP options up to 40 bytes, packets
// with no transport bytes or a truncated transport header, wrong transport
// checksums, any protocol number, link-layer padding after the datagram,
// any TOS.
//
// # Kernel facts qtables must reproduce
//
//   - FORWARD sees the TTL already decremented (ip_forward decrements it
//     before the hook): `-m ttl --ttl-eq 63` matches a packet that arrived
//     with TTL 64.
//   - The installed iptables (1.8.9, nf_tables backend) turns some matches
//     into native nftables expressions instead of the xt modules. In
//     particular, tcp and udp matches whose only options are ports and
//     flags become payload comparisons that load just the bytes they test:
//     they never hotdrop, a truncated header fails only the fields it lacks
//     (a TCP header of 2 bytes still has a source port), and non-first
//     fragments are read as if their first bytes were a transport header.
//     A tcp match with --tcp-option, a tcp or udp match with nothing to
//     translate (no option, or only full port ranges), icmp and multiport
//     stay xt matches with the xt semantics (no match on non-first
//     fragments; hotdrop on a short header and, for tcp, on fragment
//     offset 1).
//   - iptables-nft refuses `! -s ADDR/0`, drops an inverted full port range
//     (`! --dport 0:65535`) and a zero --tcp-flags mask from the rule (both
//     change meaning and vanish from iptables-save), and prints two tcp or
//     udp matches of one rule merged into one. The generator avoids these
//     four so that the expected output is a faithful picture of the rule.
//   - iptables-save prints protocol names from /etc/protocols (`-p gre`,
//     `-p igmp`) and truncates LOG prefixes to 29 bytes.
//   - iptables-nft installs `-m limit` as an nftables limit expression (a
//     nanosecond token bucket, full when the rule set is loaded), string,
//     time and hashlimit as xt matches. The time match reads the wall
//     clock, so RunCase stamps the pcap with the sending time and
//     GenerateAt builds time rules whose result cannot change for
//     TimeMargin around the clock; limit rules refill too slowly to depend
//     on how fast the frames go (gen_time.go, gen_limit.go).
//   - Before FORWARD the kernel has filled in record route and timestamp
//     options (ip_options_compile on receipt: FW's egress address, 100.64.0.5,
//     and the time of day, pointers advanced), so a string match covering
//     the IP header sees those bytes. qtables does not reproduce that yet:
//     in rule sets with string matches the generator turns such options
//     into NOPs (gen_string.go).
package conformance
