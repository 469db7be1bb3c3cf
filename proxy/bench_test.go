package proxy

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/pktio"
	"github.com/syngate/syngate/spec"
)

// benchSYN measures one SYN through the receive path: parse, listen-path
// decision, cookie or queue entry, SYN-ACK written in place. Each iteration
// restores the SYN into the frame first (a copy of ~80 bytes).
func benchSYN(b *testing.B, policy spec.CookiePolicy, is6 bool) {
	r := newRig(&testing.T{}, policy, func(c *Config) { c.Services[0].Limits.MaxSynBacklog = 65536 })
	b.Cleanup(r.cancel)
	client, dst := r.client, vip
	if is6 {
		client, dst = netip.MustParseAddrPort("[2001:db8::7]:40000"), netip.MustParseAddrPort("[2001:db8::10]:80")
		r.e.set.Load().services[dst] = r.e.set.Load().order[0]
	}
	tmpl := make([]byte, 2048)
	n, err := packet.BuildSyn(tmpl, &packet.Fields{Src: client, Dst: dst, Seq: 1, Flags: packet.SYN, Window: 64240,
		Options: flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 1}})
	if err != nil {
		b.Fatal(err)
	}
	w := &worker{e: r.e, rng: rand.New(rand.NewPCG(1, 2))}
	frame := make([]byte, 2048)
	p := pktio.Packet{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(frame, tmpl[:n])
		// A new client port each time: a flood, not a retransmission.
		port := uint16(i)
		if is6 {
			frame[54], frame[55] = byte(port>>8), byte(port)
			frame[37] = byte(i >> 16) // source address, low bytes
		} else {
			frame[34], frame[35] = byte(port>>8), byte(port)
			frame[29] = byte(i >> 16)
		}
		p.Data = frame[:n]
		if !w.handle(&p) {
			b.Fatal("no SYN-ACK")
		}
	}
}

func BenchmarkSYNCookieV4(b *testing.B) { benchSYN(b, spec.CookiesAlways, false) }
func BenchmarkSYNCookieV6(b *testing.B) { benchSYN(b, spec.CookiesAlways, true) }
func BenchmarkSYNQueueV4(b *testing.B)  { benchSYN(b, spec.CookiesAuto, false) }
