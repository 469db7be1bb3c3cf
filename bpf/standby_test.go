package bpf

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// TestStandbyCookies: a service with StandbyCookies is answered by the
// program's cookies only while no engine socket is registered for the
// queue, and the engine gets the SYNs again once one is. The socket leaving
// the map when it closes (as at a process exit, SIGKILL included) brings
// the standby answers back without any cleanup.
func TestStandbyCookies(t *testing.T) {
	d := testDataplane(t, Config{})
	jar := testJar(t)
	now := time.Now()
	if err := d.SetCookieKey(jar.DataplaneKey(now)); err != nil {
		t.Fatal(err)
	}
	if err := d.SetService(spec.Entry{Listen: svc4, ID: 1, Standby: true, Offer: spec.Offer{Window: 1000, WScale: 7}}); err != nil {
		t.Fatal(err)
	}
	syn := frame(t, pkt{src: client4, dst: svc4, flags: "S", seq: 77})
	var s packet.Segment
	if err := packet.Parse(syn, &s); err != nil {
		t.Fatal(err)
	}

	r := mustRun(t, d, append([]byte(nil), syn...))
	if r.verdict != VerdictTXSynAckCookie {
		t.Fatalf("no engine: verdict %v, want %v", r.verdict, VerdictTXSynAckCookie)
	}
	seq := binary.BigEndian.Uint32(r.out[tcp4Off+4:])
	if _, reason := jar.Check(s.Tuple, 78, seq+1, false, 0, now); reason != cookie.ReasonOK {
		t.Fatalf("standby cookie %#x rejected by the jar: %v", seq, reason)
	}
	// The IPv6 service has no standby flag: dropped as before.
	syn6 := frame(t, pkt{src: client6, dst: svc6, flags: "S", seq: 77})
	if r := mustRun(t, d, syn6); r.verdict != VerdictDropNoSocket {
		t.Fatalf("service without standby cookies, no engine: verdict %v", r.verdict)
	}

	// The ACK that follows, with data, is kept for the next engine, headers
	// only.
	ack := frame(t, pkt{src: client4, dst: svc4, flags: "A", seq: 78, ack: seq + 1, opts: []layers.TCPOption{optTS(5, 6)}, payload: []byte("GET /")})
	if r := mustRun(t, d, ack); r.verdict != VerdictDropNoSocket {
		t.Fatalf("ACK with no engine: verdict %v", r.verdict)
	}
	if r := mustRun(t, d, frame(t, pkt{src: client6, dst: svc6, flags: "A", seq: 1, ack: 1})); r.verdict != VerdictDropNoSocket {
		t.Fatalf("ACK to a service without standby cookies: verdict %v", r.verdict)
	}
	kept, err := d.TakeStandbyACKs()
	if err != nil || len(kept) != 1 {
		t.Fatalf("kept ACKs %d, %v; want the one to the standby service", len(kept), err)
	}
	var ks packet.Segment
	if err := packet.Parse(kept[0].Frame, &ks); err != nil {
		t.Fatalf("kept frame does not parse: %v", err)
	}
	if ks.Seq != 78 || ks.Ack != seq+1 || !ks.Options.Timestamps || ks.Options.TSecr != 6 || len(ks.Payload) != 0 || kept[0].Ifindex != loIfindex {
		t.Fatalf("kept ACK seq %d ack %d ts %+v payload %d ifindex %d", ks.Seq, ks.Ack, ks.Options, len(ks.Payload), kept[0].Ifindex)
	}
	if again, _ := d.TakeStandbyACKs(); len(again) != 0 {
		t.Fatalf("kept ACKs not removed: %d left", len(again))
	}

	x := xskSocketHandle(t)
	if err := d.RegisterSocket(loIfindex, 0, x.fd); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, d, append([]byte(nil), syn...)); r.verdict != VerdictXSKSyn {
		t.Fatalf("engine socket registered: verdict %v, want %v", r.verdict, VerdictXSKSyn)
	}
	if r := mustRun(t, d, frame(t, pkt{src: client4, dst: svc4, flags: "A", seq: 78, ack: seq + 1})); r.verdict != VerdictXSKHandshake {
		t.Fatalf("ACK with an engine: verdict %v", r.verdict)
	}
	if kept, _ := d.TakeStandbyACKs(); len(kept) != 0 {
		t.Fatal("an ACK the engine got was kept too")
	}
	x.close() // the process holding it exits
	if r := mustRun(t, d, append([]byte(nil), syn...)); r.verdict != VerdictTXSynAckCookie {
		t.Fatalf("engine socket closed: verdict %v, want %v", r.verdict, VerdictTXSynAckCookie)
	}

	// A stale key stops the standby answers: never a cookie Check refuses.
	if err := d.SetCookieKey(cookie.DataplaneKey{}); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, d, append([]byte(nil), syn...)); r.verdict != VerdictDropNoSocket {
		t.Fatalf("no key, no engine: verdict %v, want %v", r.verdict, VerdictDropNoSocket)
	}
}
