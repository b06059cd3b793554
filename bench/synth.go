// Package bench holds qtables' benchmark harness and its generators of
// traffic and rule sets. The traffic generator here also makes the demo's
// capture and test captures: deterministic for a given spec and seed.
package bench

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// SynthSpec describes generated traffic: Flows conversations between
// clients in 10.0.0.0/16 and servers in 192.0.2.0/24 (TEST-NET-1) and
// 198.51.100.0/24 (TEST-NET-2), each a TCP connection (handshake, request,
// reply, FIN exchange), a UDP request/response or an ICMP echo exchange.
type SynthSpec struct {
	Flows int
	// Weights of TCP, UDP and ICMP flows.
	TCP, UDP, ICMP int
	// Ports are the TCP/UDP server ports flows pick from.
	TCPPorts, UDPPorts []uint16
	// Payload is the request payload size in bytes.
	Payload int
	Seed    uint64
	Start   time.Time
}

// DefaultSynth is the demo traffic: a small mixed workload.
func DefaultSynth() SynthSpec {
	return SynthSpec{
		Flows: 40, TCP: 60, UDP: 25, ICMP: 15,
		TCPPorts: []uint16{22, 80, 443, 8080, 3306},
		UDPPorts: []uint16{53, 123, 514},
		Payload:  64, Seed: 1,
		Start: time.Date(2026, 1, 5, 9, 30, 0, 0, time.UTC),
	}
}

// ParseSynth reads a spec as comma-separated key=value pairs over the
// defaults: flows=N, tcp=W, udp=W, icmp=W, tcp-ports=P:P:P, udp-ports=...,
// payload=N, seed=N, start=RFC3339.
func ParseSynth(s string) (SynthSpec, error) {
	sp := DefaultSynth()
	if strings.TrimSpace(s) == "" {
		return sp, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return sp, fmt.Errorf("synth spec: %q is not key=value", kv)
		}
		var err error
		switch k {
		case "flows":
			sp.Flows, err = strconv.Atoi(v)
		case "tcp":
			sp.TCP, err = strconv.Atoi(v)
		case "udp":
			sp.UDP, err = strconv.Atoi(v)
		case "icmp":
			sp.ICMP, err = strconv.Atoi(v)
		case "payload":
			sp.Payload, err = strconv.Atoi(v)
		case "seed":
			sp.Seed, err = strconv.ParseUint(v, 10, 64)
		case "start":
			sp.Start, err = time.Parse(time.RFC3339, v)
		case "tcp-ports", "udp-ports":
			var ports []uint16
			for _, p := range strings.Split(v, ":") {
				n, perr := strconv.ParseUint(p, 10, 16)
				if perr != nil {
					err = perr
					break
				}
				ports = append(ports, uint16(n))
			}
			if k == "tcp-ports" {
				sp.TCPPorts = ports
			} else {
				sp.UDPPorts = ports
			}
		default:
			return sp, fmt.Errorf("synth spec: unknown key %q", k)
		}
		if err != nil {
			return sp, fmt.Errorf("synth spec: %s: %v", k, err)
		}
	}
	if sp.Flows < 0 || sp.TCP < 0 || sp.UDP < 0 || sp.ICMP < 0 || sp.TCP+sp.UDP+sp.ICMP == 0 || sp.Payload < 0 || sp.Payload > 1400 {
		return sp, fmt.Errorf("synth spec: flows, weights and payload (0..1400) must be non-negative, weights not all 0")
	}
	if len(sp.TCPPorts) == 0 || len(sp.UDPPorts) == 0 {
		return sp, fmt.Errorf("synth spec: port lists must not be empty")
	}
	return sp, nil
}

var (
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	routerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
)

// Generate calls emit for every frame (Ethernet) of the traffic, in time
// order. Flows run one after another, 1 ms apart, packets 100 µs apart.
func (sp SynthSpec) Generate(emit func(ts time.Time, frame []byte) error) error {
	r := rand.New(rand.NewPCG(sp.Seed, sp.Seed^0x9e3779b97f4a7c15))
	ts := sp.Start
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	id := uint16(1)
	send := func(src, dst net.IP, ttl uint8, l4 ...gopacket.SerializableLayer) error {
		eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: routerMAC, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Id: id, Flags: layers.IPv4DontFragment, SrcIP: src, DstIP: dst}
		id++
		switch l := l4[0].(type) {
		case *layers.TCP:
			ip.Protocol = layers.IPProtocolTCP
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			ip.Protocol = layers.IPProtocolUDP
			l.SetNetworkLayerForChecksum(ip)
		case *layers.ICMPv4:
			ip.Protocol = layers.IPProtocolICMPv4
		}
		all := append([]gopacket.SerializableLayer{eth, ip}, l4...)
		if err := gopacket.SerializeLayers(buf, opts, all...); err != nil {
			return err
		}
		frame := append([]byte(nil), buf.Bytes()...)
		ts = ts.Add(100 * time.Microsecond)
		return emit(ts, frame)
	}
	payload := func(n int, prefix string) gopacket.Payload {
		p := []byte(prefix)
		for len(p) < n {
			p = append(p, byte('a'+len(p)%26))
		}
		return gopacket.Payload(p[:max(n, len(prefix))])
	}
	total := sp.TCP + sp.UDP + sp.ICMP
	for f := 0; f < sp.Flows; f++ {
		ts = ts.Add(time.Millisecond)
		client := net.IPv4(10, 0, byte(r.IntN(4)), byte(1+r.IntN(250)))
		server := net.IPv4(192, 0, 2, byte(1+r.IntN(20)))
		if r.IntN(4) == 0 {
			server = net.IPv4(198, 51, 100, byte(1+r.IntN(20)))
		}
		cport := uint16(32768 + r.IntN(28000))
		switch k := r.IntN(total); {
		case k < sp.TCP:
			sport := sp.TCPPorts[r.IntN(len(sp.TCPPorts))]
			seq, ack := r.Uint32(), r.Uint32()
			c := func(flags string, s, a uint32, data gopacket.Payload) error {
				t := tcpFlags(flags)
				t.SrcPort, t.DstPort, t.Seq, t.Ack, t.Window = layers.TCPPort(cport), layers.TCPPort(sport), s, a, 64240
				if t.SYN {
					t.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}
				}
				if data != nil {
					return send(client, server, 64, t, data)
				}
				return send(client, server, 64, t)
			}
			sv := func(flags string, s, a uint32, data gopacket.Payload) error {
				t := tcpFlags(flags)
				t.SrcPort, t.DstPort, t.Seq, t.Ack, t.Window = layers.TCPPort(sport), layers.TCPPort(cport), s, a, 65160
				if data != nil {
					return send(server, client, 57, t, data)
				}
				return send(server, client, 57, t)
			}
			req := payload(sp.Payload, fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: server%d.example\r\n\r\n", f, server[15]))
			steps := []error{
				c("S", seq, 0, nil),
				sv("SA", ack, seq+1, nil),
				c("A", seq+1, ack+1, nil),
				c("PA", seq+1, ack+1, req),
				sv("PA", ack+1, seq+1+uint32(len(req)), payload(2*sp.Payload, "HTTP/1.1 200 OK\r\n")),
				c("FA", seq+1+uint32(len(req)), ack+1+uint32(2*sp.Payload), nil),
				sv("FA", ack+1+uint32(2*sp.Payload), seq+2+uint32(len(req)), nil),
				c("A", seq+2+uint32(len(req)), ack+2+uint32(2*sp.Payload), nil),
			}
			for _, err := range steps {
				if err != nil {
					return err
				}
			}
		case k < sp.TCP+sp.UDP:
			sport := sp.UDPPorts[r.IntN(len(sp.UDPPorts))]
			u := &layers.UDP{SrcPort: layers.UDPPort(cport), DstPort: layers.UDPPort(sport)}
			if err := send(client, server, 64, u, payload(sp.Payload/2, "query")); err != nil {
				return err
			}
			u2 := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(cport)}
			if err := send(server, client, 57, u2, payload(sp.Payload, "answer")); err != nil {
				return err
			}
		default:
			icmpID := uint16(r.IntN(65536))
			for s := uint16(1); s <= 2; s++ {
				e := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: icmpID, Seq: s}
				if err := send(client, server, 64, e, payload(56, "")); err != nil {
					return err
				}
				er := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(0, 0), Id: icmpID, Seq: s}
				if err := send(server, client, 57, er, payload(56, "")); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func tcpFlags(s string) *layers.TCP {
	t := &layers.TCP{}
	for _, c := range s {
		switch c {
		case 'S':
			t.SYN = true
		case 'A':
			t.ACK = true
		case 'F':
			t.FIN = true
		case 'P':
			t.PSH = true
		case 'R':
			t.RST = true
		}
	}
	return t
}
