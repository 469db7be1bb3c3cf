package bpf

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/packet"
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
	if err := d.SetService(Service{Addr: svc4, ID: 1, StandbyCookies: true, Announce: Announce{Window: 1000, WScale: 7}}); err != nil {
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

	x := xskSocketHandle(t)
	if err := d.RegisterSocket(loIfindex, 0, x.fd); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, d, append([]byte(nil), syn...)); r.verdict != VerdictXSKSyn {
		t.Fatalf("engine socket registered: verdict %v, want %v", r.verdict, VerdictXSKSyn)
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
