package proxy

import (
	"testing"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

type fakeHandoff struct{ peers [][6]byte }

func (f *fakeHandoff) Peers(int) [][6]byte { return f.peers }
func (f *fakeHandoff) IsPeer(mac [6]byte) bool {
	for _, p := range f.peers {
		if p == mac {
			return true
		}
	}
	return false
}

// TestHandoff: a segment of a connection the engine does not know goes to
// every peer (their MAC as destination, ours as source, the segment
// unchanged); one that came from a peer is not passed on again.
func TestHandoff(t *testing.T) {
	peerA, peerB := [6]byte{2, 0, 0, 0, 0, 0xa}, [6]byte{2, 0, 0, 0, 0, 0xb}
	r := newRig(t, spec.CookiesAuto, func(c *Config) {
		c.Handoff = &fakeHandoff{peers: [][6]byte{peerA, peerB}}
		c.Services[0].Limits.PeerCookieChecks = 0
	})
	data := packet.Fields{
		Src: r.client, Dst: vip, Seq: 1000, Ack: 2000, Flags: packet.ACK | packet.PSH, Window: 502,
		Options: flow.SynOptions{Timestamps: true, TSval: 1, TSecr: 2}, Payload: []byte("mid-flow data"),
	}
	r.inject(packet.Build, data)
	got := map[[6]byte]bool{}
	for range 2 {
		seg := r.reply()
		if seg.SrcMAC != r.ourMAC || seg.Src != r.client || seg.Dst != vip || seg.Seq != 1000 || string(seg.Payload) != "mid-flow data" {
			t.Fatalf("handed-off frame %x->%x %v->%v seq %d %q", seg.SrcMAC, seg.DstMAC, seg.Src, seg.Dst, seg.Seq, seg.Payload)
		}
		got[seg.DstMAC] = true
	}
	if !got[peerA] || !got[peerB] {
		t.Errorf("handed to %v, want both peers", got)
	}
	// A FIN too.
	fin := data
	fin.Flags, fin.Payload = packet.FIN|packet.ACK, nil
	r.inject(packet.Build, fin)
	r.reply()
	r.reply()
	// From a peer: not again.
	saved := r.peerMAC
	r.peerMAC = peerA
	r.inject(packet.Build, data)
	r.peerMAC = saved
	r.noReply()
	st := r.e.set.Load().order[0].ServiceStats()
	if st.HandedOff != 2 || st.AckRejected["no_entry"] != 1 {
		t.Errorf("handed off %d, no_entry %d; want 2, 1", st.HandedOff, st.AckRejected["no_entry"])
	}
	r.noSentIP()
}

// TestReplayNotHandedOff: a segment the data plane kept while no engine ran
// that is no cookie of ours (a FIN of a peer's connection, a forged ACK) is
// rejected at the replay, not handed off: a replay has no socket to send
// from, and the sender retransmits anyway.
func TestReplayNotHandedOff(t *testing.T) {
	peerA := [6]byte{2, 0, 0, 0, 0, 0xa}
	r := newRig(t, spec.CookiesAuto, func(c *Config) {
		c.Handoff = &fakeHandoff{peers: [][6]byte{peerA}}
	})
	r.e.CookiesSentElsewhere()
	buf := make([]byte, 2048)
	n, err := packet.Build(buf, &packet.Fields{
		Src: r.client, Dst: vip, Seq: 1000, Ack: 2000, Flags: packet.FIN | packet.ACK, Window: 502,
		Options: flow.SynOptions{Timestamps: true, TSval: 1, TSecr: 2},
		SrcMAC:  r.peerMAC, DstMAC: r.ourMAC,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.e.ReplayACKs([]flow.StandbyACK{{Frame: buf[:n], Ifindex: 3}}); got != 0 {
		t.Fatalf("validated %d, want 0", got)
	}
	st := r.e.set.Load().order[0].ServiceStats()
	if st.HandedOff != 0 || st.AckRejected["no_entry"]+st.AckRejected["bad_hash"] != 1 {
		t.Errorf("handed off %d, rejected %v; want 0 and one rejection", st.HandedOff, st.AckRejected)
	}
	r.noReply()
	r.noSentIP()
}
