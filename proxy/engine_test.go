package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/pktio"
	"github.com/syngate/syngate/spec"
)

// fakeFlows is an in-memory data path: flow table, services map,
// locals and cookie key.
type fakeFlows struct {
	mu       sync.Mutex
	flows    map[flow.Key]flow.State
	fail     error
	services map[netip.AddrPort]spec.Entry
	writes   []spec.Entry // every SetService, in order
	locals   map[netip.Addr]bool
	keys     int // SetCookieKey calls
}

func newFakeFlows() *fakeFlows {
	return &fakeFlows{flows: map[flow.Key]flow.State{}, services: map[netip.AddrPort]spec.Entry{}, locals: map[netip.Addr]bool{}}
}

func (f *fakeFlows) SetService(e spec.Entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services[e.Listen] = e
	f.writes = append(f.writes, e)
	return nil
}

func (f *fakeFlows) DeleteService(l netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return deleteKey(f.services, l)
}

// deleteKey deletes k from m; flow.ErrNotFound when absent, as a map does.
func deleteKey[K comparable, V any](m map[K]V, k K) error {
	if _, ok := m[k]; !ok {
		return flow.ErrNotFound
	}
	delete(m, k)
	return nil
}

func (f *fakeFlows) Services() ([]spec.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []spec.Entry
	for _, e := range f.services {
		out = append(out, e)
	}
	return out, nil
}

// service returns the entry at l, if any.
func (f *fakeFlows) service(l netip.AddrPort) (spec.Entry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.services[l]
	return e, ok
}

// lastWrite returns the latest SetService and how many there were.
func (f *fakeFlows) lastWrite() (spec.Entry, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.writes) == 0 {
		return spec.Entry{}, 0
	}
	return f.writes[len(f.writes)-1], len(f.writes)
}

func (f *fakeFlows) AddLocal(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.locals[a] = true
	return nil
}

func (f *fakeFlows) DeleteLocal(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.locals, a)
	return nil
}

func (f *fakeFlows) Locals() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for a := range f.locals {
		out = append(out, a)
	}
	return out, nil
}

func (f *fakeFlows) SetCookieKey(cookie.DataplaneKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys++
	return nil
}

func (f *fakeFlows) InstallTrackedFlow(k flow.Key, n flow.NAT, tr flow.Track) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.flows[k] = flow.State{NAT: n, Tracked: true, Track: tr}
	return nil
}

// InstallFlow installs an untracked entry, as an earlier version did.
func (f *fakeFlows) InstallFlow(k flow.Key, n flow.NAT) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows[k] = flow.State{NAT: n}
	return nil
}

// RaiseSeqEnd raises a tracked entry's seq_end, as the data plane does.
func (f *fakeFlows) RaiseSeqEnd(k flow.Key, seqEnd uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.flows[k]
	if !ok {
		return flow.ErrNotFound
	}
	if s.Tracked && int32(seqEnd-s.Track.SeqEnd) > 0 {
		s.Track.SeqEnd = seqEnd
		f.flows[k] = s
	}
	return nil
}

func (f *fakeFlows) DeleteFlow(k flow.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return deleteKey(f.flows, k)
}

func (f *fakeFlows) LookupFlow(k flow.Key) (flow.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.flows[k]
	if !ok {
		return s, flow.ErrNotFound
	}
	return s, nil
}

func (f *fakeFlows) IterateFlows(fn func(flow.Key, flow.State) bool) error {
	f.mu.Lock()
	all := make(map[flow.Key]flow.State, len(f.flows))
	for k, v := range f.flows {
		all[k] = v
	}
	f.mu.Unlock()
	for k, v := range all {
		if !fn(k, v) {
			break
		}
	}
	return nil
}

func (f *fakeFlows) get(k flow.Key) (flow.State, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.flows[k]
	return s, ok
}

func (f *fakeFlows) update(k flow.Key, fn func(*flow.State)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.flows[k]
	fn(&s)
	f.flows[k] = s
}

// fakeSender records the IP packets the engine originates, parsed.
type fakeSender struct{ ch chan packet.Segment }

func (s *fakeSender) SendIP(pkt []byte) error {
	frame := make([]byte, 14+len(pkt))
	if pkt[0]>>4 == 6 {
		frame[12], frame[13] = 0x86, 0xdd
	} else {
		frame[12], frame[13] = 0x08, 0x00
	}
	copy(frame[14:], pkt)
	var seg packet.Segment
	if err := packet.Parse(frame, &seg); err != nil {
		return err
	}
	if err := packet.VerifyChecksums(frame, &seg); err != nil {
		return err
	}
	seg.Payload = append([]byte(nil), seg.Payload...)
	s.ch <- seg
	return nil
}

// rig is an engine wired to an in-memory link, flow table and sender.
type rig struct {
	t       *testing.T
	e       *Engine
	link    *pktio.MemPort // the test's end: it plays client and backend
	flows   *fakeFlows
	sent    *fakeSender
	now     time.Time
	mono    time.Duration
	mu      sync.Mutex
	svc     spec.Service
	cancel  context.CancelFunc
	done    sync.WaitGroup
	client  netip.AddrPort
	ourMAC  [6]byte
	peerMAC [6]byte
}

var (
	vip     = netip.MustParseAddrPort("192.0.2.10:80")
	backend = netip.MustParseAddrPort("10.0.0.5:8080")
	source  = netip.MustParseAddr("10.0.0.1")
)

func newRig(t *testing.T, policy spec.CookiePolicy, mutate func(*Config)) *rig {
	t.Helper()
	r := &rig{
		t: t, now: time.Unix(1_700_000_000, 0), mono: time.Hour,
		flows:  newFakeFlows(),
		sent:   &fakeSender{ch: make(chan packet.Segment, 1024)},
		client: netip.MustParseAddrPort("198.51.100.7:40000"),
		ourMAC: [6]byte{2, 0, 0, 0, 0, 1}, peerMAC: [6]byte{2, 0, 0, 0, 0, 2},
	}
	jar, err := cookie.NewJar([]byte("0123456789abcdef0123456789abcdef"), cookie.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r.svc = spec.Service{
		Name: "web", Listen: vip, Backends: []spec.Backend{{Addr: backend, Weight: 1}}, Sources: []netip.Addr{source},
		Cookies: policy, OnOverflow: spec.OverflowDrop,
		Limits: spec.Limits{MaxSynBacklog: 16, SynAckRetries: 5, Backlog: 8, Somaxconn: 128, PeerCookieChecks: spec.DefaultPeerCookieChecks},
	}
	cfg := Config{
		Services: []spec.Service{r.svc}, Jar: jar, Datapath: r.flows, Sender: r.sent,
		PortMin: 20000, PortMax: 20009, ConnectTimeout: 3 * time.Second,
		Now: r.clock, Monotonic: func() time.Duration { r.mu.Lock(); defer r.mu.Unlock(); return r.mono },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	r.e, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.e.SetBackendOptions("web", flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}); err != nil {
		t.Fatal(err)
	}
	enginePort, testPort := pktio.Pipe(pktio.MemConfig{})
	r.link = testPort
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done.Add(2)
	go func() { defer r.done.Done(); r.e.Serve(ctx, enginePort, 3) }()
	order := r.e.set.Load().order // now: a test may Reconfigure before the goroutine runs
	go func() {
		defer r.done.Done()
		for _, s := range order {
			go r.e.openBackendLegs(ctx, s)
		}
	}()
	t.Cleanup(func() { cancel(); r.done.Wait(); enginePort.Close(); testPort.Close() })
	return r
}

func (r *rig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func (r *rig) advance(d time.Duration) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = r.now.Add(d)
	r.mono += d
	return r.now
}

// inject sends a frame built from f to the engine.
func (r *rig) inject(build func([]byte, *packet.Fields) (int, error), f packet.Fields) {
	r.t.Helper()
	f.SrcMAC, f.DstMAC = r.peerMAC, r.ourMAC
	buf := make([]byte, 2048)
	n, err := build(buf, &f)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := pktio.Send(r.link, buf[:n]); err != nil {
		r.t.Fatal(err)
	}
}

// reply waits for the engine's next frame on the link.
func (r *rig) reply() packet.Segment {
	r.t.Helper()
	frame, err := pktio.Recv(r.link, 2*time.Second)
	if err != nil {
		r.t.Fatalf("no reply from the engine: %v", err)
	}
	var seg packet.Segment
	if err := packet.Parse(frame, &seg); err != nil {
		r.t.Fatal(err)
	}
	if err := packet.VerifyChecksums(frame, &seg); err != nil {
		r.t.Fatal(err)
	}
	return seg
}

func (r *rig) noReply() {
	r.t.Helper()
	if frame, err := pktio.Recv(r.link, 100*time.Millisecond); err == nil {
		r.t.Fatalf("unexpected frame from the engine: %x", frame)
	}
}

// sentIP waits for the next packet the engine originated.
func (r *rig) sentIP() packet.Segment {
	r.t.Helper()
	select {
	case s := <-r.sent.ch:
		return s
	case <-time.After(2 * time.Second):
		r.t.Fatal("the engine sent nothing")
	}
	return packet.Segment{}
}

func (r *rig) noSentIP() {
	r.t.Helper()
	select {
	case s := <-r.sent.ch:
		r.t.Fatalf("unexpected packet %v -> %v %v", s.Src, s.Dst, s.Flags)
	case <-time.After(100 * time.Millisecond):
	}
}

var clientSynOpts = flow.SynOptions{MSS: 1400, WScale: 9, SACK: true, Timestamps: true, TSval: 5000}

// handshake performs SYN, SYN-ACK, ACK (with data) and returns the SYN-ACK.
func (r *rig) handshake(isn uint32, data []byte) packet.Segment {
	r.t.Helper()
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: isn, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	sa := r.reply()
	if sa.Flags != packet.SYN|packet.ACK || sa.Ack != isn+1 || sa.Src != vip || sa.Dst != r.client {
		r.t.Fatalf("SYN-ACK = %v %v->%v ack %d", sa.Flags, sa.Src, sa.Dst, sa.Ack)
	}
	if sa.DstMAC != r.peerMAC || sa.SrcMAC != r.ourMAC {
		r.t.Fatalf("SYN-ACK MACs not swapped: %x -> %x", sa.SrcMAC, sa.DstMAC)
	}
	r.inject(packet.Build, packet.Fields{
		Src: r.client, Dst: vip, Seq: isn + 1, Ack: sa.Seq + 1, Flags: packet.ACK | packet.PSH, Window: 502,
		Options: flow.SynOptions{Timestamps: true, TSval: 5001, TSecr: sa.Options.TSval}, Payload: data,
	})
	return sa
}

// backendSynAck answers the engine's backend SYN as a backend would.
func (r *rig) backendSynAck(syn packet.Segment, isn uint32, wscale uint8) {
	r.inject(packet.BuildSynAck, packet.Fields{
		Src: backend, Dst: syn.Src, Seq: isn, Ack: syn.Seq + 1, Flags: packet.SYN | packet.ACK, Window: 65160,
		Options: flow.SynOptions{MSS: 1460, WScale: wscale, SACK: true, Timestamps: true, TSval: 777000, TSecr: syn.Options.TSval},
	})
}

func testSplice(t *testing.T, policy spec.CookiePolicy) {
	r := newRig(t, policy, nil)
	const isn = 1_000_000
	sa := r.handshake(isn, []byte("GET / HTTP/1.0\r\n\r\n"))
	wantMSS := uint16(1400)
	if policy == spec.CookiesAlways {
		wantMSS = 1300 // the cookie's MSS table rounds down
	}
	if sa.Options.MSS != wantMSS || sa.Options.WScale != 7 || !sa.Options.SACK || !sa.Options.Timestamps || sa.Options.TSecr != 5000 {
		t.Errorf("SYN-ACK options = %+v: want MSS min(1460, client 1400), wscale 7, SACK, TS echoing 5000", sa.Options)
	}
	if sa.Window == 0 {
		t.Error("SYN-ACK announces a zero window")
	}

	syn := r.sentIP()
	if syn.Flags != packet.SYN || syn.Dst != backend || syn.Src.Addr() != source {
		t.Fatalf("backend SYN = %v %v->%v; want SYN from %v to %v", syn.Flags, syn.Src, syn.Dst, source, backend)
	}
	// The leg has its own sequence space (any ISN on a fresh port) and
	// its timestamps come from the engine's millisecond clock.
	leg := syn.Seq
	tsd := syn.Options.TSval - 5001
	if syn.Options.TSval != tsClock(r.now) {
		t.Errorf("backend SYN TSval %d, want the engine's clock %d", syn.Options.TSval, tsClock(r.now))
	}
	if p := syn.Src.Port(); p < 20000 || p > 20009 {
		t.Errorf("backend SYN source port %d outside 20000-20009", p)
	}
	if o := syn.Options; o.MSS != wantMSS || o.WScale != 9 || !o.SACK || !o.Timestamps {
		t.Errorf("backend SYN options = %+v; want the client's (MSS %d, wscale 9, SACK, timestamps)", o, wantMSS)
	}
	r.noReply()

	const bisn = 555_000
	r.backendSynAck(syn, bisn, 10)
	// The held request completes the backend's handshake itself: no
	// separate ACK goes first (see heldAcks).
	data := r.sentIP()
	if data.Flags&(packet.ACK|packet.SYN|packet.RST) != packet.ACK {
		t.Errorf("held data flags %v: it must acknowledge the backend's SYN-ACK", data.Flags)
	}
	if string(data.Payload) != "GET / HTTP/1.0\r\n\r\n" || data.Seq != leg+1 || data.Ack != bisn+1 || data.Dst != backend {
		t.Errorf("held data = %q seq %d ack %d to %v", data.Payload, data.Seq, data.Ack, data.Dst)
	}
	if !data.Options.Timestamps || data.Options.TSval != 5001+tsd || data.Options.TSecr != 777000 {
		t.Errorf("held data timestamps = %+v, want TSval 5001 in the leg's clock and TSecr in the backend's (777000)", data.Options)
	}

	toBackend, ok := r.flows.get(flow.Key{Src: r.client, Dst: vip})
	if !ok {
		t.Fatal("no client->backend flow installed")
	}
	n := toBackend.NAT
	if n.Src != syn.Src || n.Dst != backend || n.SeqDelta != leg-isn || n.AckDelta != bisn-sa.Seq || n.TSvalDelta != tsd || n.TSecrDelta != 777000-sa.Options.TSval {
		t.Errorf("client->backend NAT = %+v", n)
	}
	if n.Ifindex != 3 || n.DstMAC != r.peerMAC || n.SrcMAC != r.ourMAC {
		t.Errorf("client->backend egress = %d %x->%x", n.Ifindex, n.SrcMAC, n.DstMAC)
	}
	toClient, ok := r.flows.get(flow.Key{Src: backend, Dst: syn.Src})
	if !ok {
		t.Fatal("no backend->client flow installed")
	}
	n = toClient.NAT
	if n.Src != vip || n.Dst != r.client || n.SeqDelta != sa.Seq-bisn || n.AckDelta != isn-leg || n.TSvalDelta != sa.Options.TSval-777000 || n.TSecrDelta != -tsd {
		t.Errorf("backend->client NAT = %+v", n)
	}
	if n.InShift != 10 || n.OutShift != 7 {
		t.Errorf("window shifts %d->%d, want backend's 10 -> announced 7", n.InShift, n.OutShift)
	}
	st := r.e.set.Load().order[0].ServiceStats()
	if st.Spliced != 1 {
		t.Errorf("spliced = %d", st.Spliced)
	}
	opening := 0
	r.e.conns.each(true, func(*conn) { opening++ })
	if opening != 0 || r.e.Stats().Spliced != 1 {
		t.Errorf("after the splice: %d connections still opening, %d spliced; want 0, 1", opening, r.e.Stats().Spliced)
	}
	if policy == spec.CookiesAlways && (st.SynAckCookie != 1 || st.AckCookie != 1) {
		t.Errorf("cookie stats = %+v", st)
	}
	if policy == spec.CookiesNever && (st.SynAckQueued != 1 || st.AckQueue != 1) {
		t.Errorf("queue stats = %+v", st)
	}

	// A backend segment that arrives before XDP sees the flow entry is
	// forwarded by the engine, translated.
	r.inject(packet.Build, packet.Fields{
		Src: backend, Dst: syn.Src, Seq: bisn + 1, Ack: leg + 19, Flags: packet.ACK | packet.PSH, Window: 100,
		Options: flow.SynOptions{Timestamps: true, TSval: 777010, TSecr: 5001 + tsd}, Payload: []byte("HTTP/1.0 200 OK\r\n"),
	})
	fwd := r.sentIP()
	if fwd.Src != vip || fwd.Dst != r.client || fwd.Seq != sa.Seq+1 || fwd.Ack != isn+19 || fwd.Window != 100<<10>>7 ||
		fwd.Options.TSval != sa.Options.TSval+10 || fwd.Options.TSecr != 5001 {
		t.Errorf("slow-path forward = %v->%v seq %d ack %d win %d tsval %d tsecr %d", fwd.Src, fwd.Dst, fwd.Seq, fwd.Ack, fwd.Window, fwd.Options.TSval, fwd.Options.TSecr)
	}
	if got := r.e.set.Load().order[0].ServiceStats().SlowPath; got != 1 {
		t.Errorf("slowpath = %d, want 1", got)
	}
}

func TestSpliceQueuePath(t *testing.T)  { testSplice(t, spec.CookiesNever) }
func TestSpliceCookiePath(t *testing.T) { testSplice(t, spec.CookiesAlways) }

func TestCookieWithoutTimestampsDropsOptions(t *testing.T) {
	r := newRig(t, spec.CookiesAlways, nil)
	opts := flow.SynOptions{MSS: 1460, WScale: 9, SACK: true}
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 1, Flags: packet.SYN, Window: 64240, Options: opts})
	sa := r.reply()
	if sa.Options.HasWScale() || sa.Options.SACK || sa.Options.Timestamps {
		t.Errorf("cookie SYN-ACK without client timestamps offers %+v; the cookie cannot carry them", sa.Options)
	}
	r.inject(packet.Build, packet.Fields{Src: r.client, Dst: vip, Seq: 2, Ack: sa.Seq + 1, Flags: packet.ACK, Window: 64240})
	syn := r.sentIP()
	if syn.Options.HasWScale() || syn.Options.SACK || syn.Options.Timestamps || syn.Options.MSS != 1460 {
		t.Errorf("backend SYN options = %+v, want MSS 1460 only", syn.Options)
	}
}

func TestForgedACKRejected(t *testing.T) {
	r := newRig(t, spec.CookiesAlways, nil)
	r.inject(packet.Build, packet.Fields{Src: r.client, Dst: vip, Seq: 100, Ack: 12345, Flags: packet.ACK, Window: 100})
	r.noSentIP()
	st := r.e.set.Load().order[0].ServiceStats()
	var rejected uint64
	for _, n := range st.AckRejected {
		rejected += n
	}
	if rejected != 1 || st.Spliced != 0 {
		t.Errorf("rejected %d (%v), spliced %d", rejected, st.AckRejected, st.Spliced)
	}
	// Without a recent cookie an unknown ACK is not even checked.
	r2 := newRig(t, spec.CookiesNever, nil)
	r2.inject(packet.Build, packet.Fields{Src: r2.client, Dst: vip, Seq: 100, Ack: 12345, Flags: packet.ACK, Window: 100})
	r2.noSentIP()
	if got := r2.e.set.Load().order[0].ServiceStats().AckRejected["no_entry"]; got != 1 {
		t.Errorf("no_entry = %d, want 1", got)
	}
}

func TestBackendRefusedResetsClient(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	sa := r.handshake(42, nil)
	syn := r.sentIP()
	r.inject(packet.Build, packet.Fields{Src: backend, Dst: syn.Src, Seq: 0, Ack: syn.Seq + 1, Flags: packet.RST | packet.ACK})
	rst := r.sentIP()
	if rst.Flags&packet.RST == 0 || rst.Src != vip || rst.Dst != r.client || rst.Seq != sa.Seq+1 {
		t.Errorf("client RST = %v %v->%v seq %d", rst.Flags, rst.Src, rst.Dst, rst.Seq)
	}
	if got := r.e.set.Load().order[0].ServiceStats().BackendFailures["refused"]; got != 1 {
		t.Errorf("refused = %d", got)
	}
	if r.e.conns.n.Load() != 0 {
		t.Errorf("connection still tracked")
	}
}

func TestBackendTimeout(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	r.handshake(42, nil)
	syn := r.sentIP()
	r.e.expireOpening(r.advance(time.Second))
	if again := r.sentIP(); again.Flags != packet.SYN || again.Seq != syn.Seq || again.Src != syn.Src {
		t.Errorf("backend SYN retransmission = %v seq %d from %v", again.Flags, again.Seq, again.Src)
	}
	r.e.expireOpening(r.advance(2 * time.Second))
	rst := r.sentIP()
	if rst.Flags&packet.RST == 0 || rst.Dst != r.client {
		t.Errorf("after the connect timeout: %v to %v, want RST to the client", rst.Flags, rst.Dst)
	}
	if brst := r.sentIP(); brst.Flags&packet.RST == 0 || brst.Dst != backend {
		t.Errorf("backend not told: %v to %v", brst.Flags, brst.Dst)
	}
	if got := r.e.set.Load().order[0].ServiceStats().BackendFailures["timeout"]; got != 1 {
		t.Errorf("timeout = %d", got)
	}
}

func TestSynAckRetransmission(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 7, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	sa := r.reply()
	s := r.e.set.Load().order[0]
	r.e.expireHalfOpen(s, r.advance(999*time.Millisecond))
	r.noSentIP()
	r.e.expireHalfOpen(s, r.advance(time.Millisecond))
	re := r.sentIP()
	if re.Flags != packet.SYN|packet.ACK || re.Seq != sa.Seq || re.Ack != 8 || re.Dst != r.client || re.Options.MSS != sa.Options.MSS {
		t.Errorf("retransmitted SYN-ACK = %v seq %d ack %d mss %d", re.Flags, re.Seq, re.Ack, re.Options.MSS)
	}
	r.e.expireHalfOpen(s, r.advance(time.Second))
	r.noSentIP() // the next one is due 2 s after the first retransmission
	r.e.expireHalfOpen(s, r.advance(time.Second))
	r.sentIP()
}

func TestOverflowReset(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) {
		c.Services[0].Limits.Backlog = 1
		c.Services[0].OnOverflow = spec.OverflowReset
	})
	// The first connection takes the only backend slot (the backend never
	// answers), the second the only accept queue place.
	r.handshake(1000, nil)
	r.sentIP()
	syn := func(port uint16, isn uint32) packet.Segment {
		r.client = netip.AddrPortFrom(r.client.Addr(), port)
		r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: isn, Flags: packet.SYN, Window: 1000, Options: clientSynOpts})
		return r.reply()
	}
	ack := func(port uint16, isn uint32, sa packet.Segment) {
		r.client = netip.AddrPortFrom(r.client.Addr(), port)
		r.inject(packet.Build, packet.Fields{Src: r.client, Dst: vip, Seq: isn + 1, Ack: sa.Seq + 1, Flags: packet.ACK, Window: 1000,
			Options: flow.SynOptions{Timestamps: true, TSval: 1, TSecr: sa.Options.TSval}})
	}
	sa2, sa3 := syn(41002, 2000), syn(41003, 3000)
	ack(41002, 2000, sa2)
	r.noReply()
	ack(41003, 3000, sa3)
	rst := r.reply()
	if rst.Flags&packet.RST == 0 || rst.Dst.Port() != 41003 || rst.Seq != sa3.Seq+1 {
		t.Errorf("overflow answer = %v to %v seq %d, want RST seq %d", rst.Flags, rst.Dst, rst.Seq, sa3.Seq+1)
	}
	// While the accept queue is full, new SYNs are dropped, cookies or not.
	r.client = netip.AddrPortFrom(r.client.Addr(), 41004)
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 5, Flags: packet.SYN, Window: 1000, Options: clientSynOpts})
	r.noReply()
	st := r.e.set.Load().order[0].ServiceStats()
	if st.AcceptOverflowReset != 1 || st.SynDropAcceptFull != 1 || st.Accept != 1 {
		t.Errorf("overflow resets %d, SYN drops %d, accept depth %d; want 1, 1, 1", st.AcceptOverflowReset, st.SynDropAcceptFull, st.Accept)
	}
}

// TestOverflowResetLateSegment: a connection reset because the accept
// queue was full (on_overflow: reset) stays reset. Its late data segment
// carries the same cookie ACK; once the queue has room again it must get a
// RST, not validate as a new handshake and open a backend leg for a client
// that no longer has the connection.
func TestOverflowResetLateSegment(t *testing.T) {
	for _, policy := range []spec.CookiePolicy{spec.CookiesAlways, spec.CookiesAuto} {
		t.Run(fmt.Sprint(policy), func(t *testing.T) {
			r := newRig(t, policy, func(c *Config) {
				c.Services[0].Limits.Backlog = 1
				c.Services[0].OnOverflow = spec.OverflowReset
			})
			// As in TestOverflowReset: the first connection takes the
			// only backend slot, the second the only accept queue place.
			r.handshake(1000, nil)
			first := r.sentIP()
			port := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(r.client.Addr(), p) }
			syn := func(p uint16, isn uint32) packet.Segment {
				r.client = port(p)
				r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: isn, Flags: packet.SYN, Window: 1000, Options: clientSynOpts})
				return r.reply()
			}
			ack := func(p uint16, isn uint32, sa packet.Segment, data string) {
				r.client = port(p)
				r.inject(packet.Build, packet.Fields{Src: r.client, Dst: vip, Seq: isn + 1, Ack: sa.Seq + 1, Flags: packet.ACK | packet.PSH, Window: 1000,
					Options: flow.SynOptions{Timestamps: true, TSval: 1, TSecr: sa.Options.TSval}, Payload: []byte(data)})
			}
			sa2, sa3 := syn(41002, 2000), syn(41003, 3000)
			ack(41002, 2000, sa2, "")
			r.noReply()
			ack(41003, 3000, sa3, "")
			if rst := r.reply(); rst.Flags&packet.RST == 0 || rst.Dst != port(41003) {
				t.Fatalf("overflow answer = %v to %v, want a RST", rst.Flags, rst.Dst)
			}
			// The first backend answers: its slot goes to the second
			// connection, and the accept queue has room again.
			r.backendSynAck(first, 9, 7)
			if s := r.sentIP(); s.Flags&packet.ACK == 0 {
				t.Fatalf("first leg: sent %v, want the ACK to the backend", s.Flags)
			}
			if s := r.sentIP(); s.Flags != packet.SYN {
				t.Fatalf("second connection: sent %v, want its backend SYN", s.Flags)
			}
			// The reset connection's late data segment.
			ack(41003, 3000, sa3, "hello")
			if rst := r.reply(); rst.Flags&packet.RST == 0 || rst.Dst != port(41003) || rst.Seq != sa3.Seq+1 {
				t.Errorf("answer to the late segment = %v to %v seq %d, want a RST at %d", rst.Flags, rst.Dst, rst.Seq, sa3.Seq+1)
			}
			r.noSentIP() // no backend SYN for it
			if got := r.e.set.Load().order[0].ServiceStats().AckRejected["recently_reset"]; got != 1 {
				t.Errorf("ack_rejected{recently_reset} = %d, want 1", got)
			}
		})
	}
}

func TestFlowExpiry(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) { c.ResetTimeout = 10 * time.Second; c.EstablishedTimeout = time.Hour })
	r.handshake(42, nil)
	syn := r.sentIP()
	r.backendSynAck(syn, 9, 7)
	r.sentIP()
	kc, kb := flow.Key{Src: r.client, Dst: vip}, flow.Key{Src: backend, Dst: syn.Src}
	r.e.expireFlows(r.advance(30 * time.Minute))
	if _, ok := r.flows.get(kc); !ok {
		t.Fatal("flow expired before its idle timeout")
	}
	r.flows.update(kb, func(s *flow.State) { s.RST = true; s.LastSeen = r.mono })
	r.e.expireFlows(r.advance(9 * time.Second))
	if _, ok := r.flows.get(kc); !ok {
		t.Fatal("flow expired before the reset timeout")
	}
	r.e.expireFlows(r.advance(time.Second))
	if _, ok := r.flows.get(kc); ok {
		t.Fatal("client flow still installed after RST + reset timeout")
	}
	if _, ok := r.flows.get(kb); ok {
		t.Fatal("backend flow still installed after RST + reset timeout")
	}
	if got := r.e.Stats().Expired["reset"]; got != 1 {
		t.Errorf("expired{reset} = %d", got)
	}
	// The source port rests, then serves again.
	if got := r.e.pools[poolKey{source, backend}].inuse(); got != 0 {
		t.Errorf("ports in use after expiry = %d", got)
	}
}

func TestFlowInstallFailureResets(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	r.flows.fail = errors.New("map full")
	r.handshake(42, nil)
	syn := r.sentIP()
	r.backendSynAck(syn, 9, 7)
	var sawClientRST bool
	for i := 0; i < 2; i++ {
		s := r.sentIP()
		if s.Flags&packet.RST != 0 && s.Dst == r.client {
			sawClientRST = true
		}
	}
	if !sawClientRST {
		t.Error("client not reset after the flow could not be installed")
	}
}

// spliceTracked opens one spliced connection (client ISN 42, backend ISN 9,
// no data) and returns the backend SYN and the SYN-ACK the client got.
func (r *rig) spliceTracked() (syn, sa packet.Segment) {
	r.t.Helper()
	sa = r.handshake(42, nil)
	syn = r.sentIP()
	if syn.Seq == 42 {
		// The tests built on this check the backend leg's sequence space.
		r.t.Fatal("the backend SYN replays the client's ISN")
	}
	r.backendSynAck(syn, 9, 7)
	r.sentIP()
	return syn, sa
}

// TestTupleReuse: a SYN never takes over a live or half-closed connection;
// it gets a challenge ACK. A client that reuses its port once both FINs are
// acked, with a higher ISN, gets a new connection (the old flows go).
func TestTupleReuse(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	syn, sa := r.spliceTracked()
	kc, kb := flow.Key{Src: r.client, Dst: vip}, flow.Key{Src: backend, Dst: syn.Src}
	a, _ := r.flows.get(kc)
	b, _ := r.flows.get(kb)
	if a.Track != (flow.Track{SeqEnd: 43, AckMax: 10, WinEnd: 10 + 502<<9, WinMax: 502 << 9, WScale: 9}) {
		t.Errorf("client track = %+v", a.Track)
	}
	// The backend offered 65160, our SYN-ACK 65535: the client may send that.
	if b.Track != (flow.Track{SeqEnd: 10, AckMax: 43, WinEnd: 43 + 65535, WinMax: 65535, WScale: 7}) {
		t.Errorf("backend track = %+v", b.Track)
	}
	// The backend has sent 1000 bytes, the client acked them.
	r.flows.update(kb, func(s *flow.State) { s.Track.SeqEnd += 1000 })
	r.flows.update(kc, func(s *flow.State) { s.Track.AckMax += 1000 })

	synAgain := func(isn uint32) {
		r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: isn, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	}
	synAgain(5000)
	r.noReply()
	ch := r.sentIP()
	if ch.Flags != packet.ACK || ch.Src != vip || ch.Dst != r.client || ch.Seq != sa.Seq+1+1000 || ch.Ack != 43 {
		t.Errorf("challenge ACK = %v %v->%v seq %d ack %d, want ACK seq %d ack 43", ch.Flags, ch.Src, ch.Dst, ch.Seq, ch.Ack, sa.Seq+1+1000)
	}
	synAgain(5001) // within 500 ms: rate-limited
	r.noSentIP()
	st := r.e.set.Load().order[0].ServiceStats()
	if st.SynDropEstablished != 2 || st.ChallengeACKSent != 1 || st.ChallengeACKLimited != 1 {
		t.Errorf("SYNs into a live connection: dropped %d, challenges %d sent %d limited; want 2, 1, 1",
			st.SynDropEstablished, st.ChallengeACKSent, st.ChallengeACKLimited)
	}
	if _, ok := r.flows.get(kc); !ok {
		t.Fatal("a SYN removed a live connection's flow")
	}

	// Half-closed: the client's FIN is acked, the backend still sends.
	r.flows.update(kc, func(s *flow.State) { s.FIN, s.FinEnd, s.Track.SeqEnd = true, 44, 44 })
	r.flows.update(kb, func(s *flow.State) { s.Track.AckMax = 44 })
	r.advance(time.Second)
	synAgain(6000)
	if ch := r.sentIP(); ch.Flags != packet.ACK || ch.Ack != 44 {
		t.Errorf("SYN into a half-closed connection: %v ack %d, want a challenge ACK", ch.Flags, ch.Ack)
	}
	// Both FINs sent, the backend's not yet acked.
	r.flows.update(kb, func(s *flow.State) { s.FIN, s.FinEnd, s.Track.SeqEnd = true, s.Track.SeqEnd+1, s.Track.SeqEnd+1 })
	r.advance(time.Second)
	synAgain(6001)
	if ch := r.sentIP(); ch.Flags != packet.ACK {
		t.Errorf("SYN before the last ACK: %v, want a challenge ACK", ch.Flags)
	}
	r.flows.update(kc, func(s *flow.State) { s.Track.AckMax++ })
	// Both FINs acked, but an ISN below the old connection's sequence
	// numbers and a timestamp no newer than its last (5000).
	r.flows.update(kc, func(s *flow.State) { s.HasTS, s.TSRecent = true, 5000 })
	r.advance(time.Second)
	synAgain(40)
	if ch := r.sentIP(); ch.Flags != packet.ACK {
		t.Errorf("SYN with an old ISN and timestamp after close: %v, want a challenge ACK", ch.Flags)
	}
	if _, ok := r.flows.get(kc); !ok {
		t.Fatal("a SYN with an old ISN removed the connection")
	}
	// The same ISN with a newer timestamp opens the new connection.
	opts := clientSynOpts
	opts.TSval = 5001
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 40, Flags: packet.SYN, Window: 64240, Options: opts})
	if sa := r.reply(); sa.Flags != packet.SYN|packet.ACK || sa.Ack != 41 {
		t.Fatalf("after the old connection closed: %v ack %d, want a SYN-ACK", sa.Flags, sa.Ack)
	}
	if _, ok := r.flows.get(kc); ok {
		t.Error("the closed connection's flow is still installed")
	}
	if got := r.e.Stats().Expired["reused"]; got != 1 {
		t.Errorf("expired{reused} = %d", got)
	}
}

// TestSynFromBackendSide: a SYN to our source port of a spliced connection
// is answered with the client's challenge ACK, in the backend's spaces, and
// never reaches the client.
func TestSynFromBackendSide(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	syn, _ := r.spliceTracked()
	r.inject(packet.BuildSyn, packet.Fields{Src: backend, Dst: syn.Src, Seq: 123, Flags: packet.SYN, Window: 1000})
	ch := r.sentIP()
	// The client's next sequence number (43) in the backend leg's space,
	// where the backend SYN carried 42.
	if ch.Flags != packet.ACK || ch.Src != syn.Src || ch.Dst != backend || ch.Seq != syn.Seq+1 || ch.Ack != 10 || ch.Window != 502 {
		t.Errorf("challenge ACK = %v %v->%v seq %d ack %d win %d, want ACK seq %d ack 10 win 502", ch.Flags, ch.Src, ch.Dst, ch.Seq, ch.Ack, ch.Window, syn.Seq+1)
	}
	r.noSentIP()
	if st := r.e.set.Load().order[0].ServiceStats(); st.ChallengeACKSent != 1 {
		t.Errorf("challenge ACKs sent = %d", st.ChallengeACKSent)
	}
}

// TestTupleReuseHigherISN: after a clean close, a SYN whose ISN is above the
// old connection's sequence numbers opens the new connection even without
// timestamps.
func TestTupleReuseHigherISN(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	syn, _ := r.spliceTracked()
	kc, kb := flow.Key{Src: r.client, Dst: vip}, flow.Key{Src: backend, Dst: syn.Src}
	r.flows.update(kc, func(s *flow.State) { s.FIN, s.FinEnd, s.Track.SeqEnd, s.Track.AckMax = true, 44, 44, 11 })
	r.flows.update(kb, func(s *flow.State) { s.FIN, s.FinEnd, s.Track.SeqEnd, s.Track.AckMax = true, 11, 11, 44 })
	opts := clientSynOpts
	opts.Timestamps = false
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 44, Flags: packet.SYN, Window: 64240, Options: opts})
	r.sentIP() // equal to the old SND.NXT: not above it
	r.advance(time.Second)
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 45, Flags: packet.SYN, Window: 64240, Options: opts})
	if sa := r.reply(); sa.Flags != packet.SYN|packet.ACK || sa.Ack != 46 {
		t.Fatalf("SYN with a higher ISN after close: %v ack %d, want a SYN-ACK", sa.Flags, sa.Ack)
	}
}

// TestTupleReuseAfterExactRST: after a RST the data plane judged exact, a
// SYN opens a new connection at once.
func TestTupleReuseAfterExactRST(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	r.spliceTracked()
	kc := flow.Key{Src: r.client, Dst: vip}
	r.flows.update(kc, func(s *flow.State) { s.RST = true })
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 1, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	if sa := r.reply(); sa.Flags != packet.SYN|packet.ACK {
		t.Fatalf("after an exact RST: %v, want a SYN-ACK", sa.Flags)
	}
}

// TestInWindowRSTForwarded: a RST that XDP judged in the window but not
// exact reaches the engine, which forwards it translated and keeps the
// connection; the backend's challenge ACK decides.
func TestInWindowRSTForwarded(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	syn, _ := r.spliceTracked()
	r.inject(packet.Build, packet.Fields{Src: r.client, Dst: vip, Seq: 43 + 1000, Flags: packet.RST})
	fwd := r.sentIP()
	if fwd.Flags != packet.RST || fwd.Src != syn.Src || fwd.Dst != backend || fwd.Seq != syn.Seq+1+1000 {
		t.Errorf("forwarded RST = %v %v->%v seq %d, want seq %d", fwd.Flags, fwd.Src, fwd.Dst, fwd.Seq, syn.Seq+1+1000)
	}
	r.inject(packet.Build, packet.Fields{Src: backend, Dst: syn.Src, Seq: 10 + 5, Flags: packet.RST})
	if fwd := r.sentIP(); fwd.Flags != packet.RST || fwd.Dst != r.client {
		t.Errorf("forwarded backend RST = %v to %v", fwd.Flags, fwd.Dst)
	}
	if _, ok := r.flows.get(flow.Key{Src: r.client, Dst: vip}); !ok {
		t.Fatal("an in-window RST removed the flow")
	}
	if st := r.e.set.Load().order[0].ServiceStats(); st.RSTInWindow != 2 {
		t.Errorf("rst_in_window = %d, want 2", st.RSTInWindow)
	}
	r.e.expireFlows(r.advance(time.Minute))
	if r.e.Stats().Spliced != 1 {
		t.Error("connection gone after an in-window RST")
	}
}

// TestRSTAfterSlowPathData: client data that raced the flow's install went
// to the backend through the engine; a RST right after it is exact.
func TestRSTAfterSlowPathData(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	_, sa := r.spliceTracked()
	r.inject(packet.Build, packet.Fields{Src: r.client, Dst: vip, Seq: 43, Ack: sa.Seq + 1, Flags: packet.ACK, Payload: []byte("late")})
	r.sentIP()
	r.inject(packet.Build, packet.Fields{Src: r.client, Dst: vip, Seq: 47, Flags: packet.RST})
	if fwd := r.sentIP(); fwd.Flags != packet.RST || fwd.Dst != backend {
		t.Errorf("forwarded = %v to %v", fwd.Flags, fwd.Dst)
	}
	// The engine forwards the RST before it ends the flow: wait for that.
	gone := func() bool {
		_, ok := r.flows.get(flow.Key{Src: r.client, Dst: vip})
		return !ok && r.e.Stats().Expired["reset"] == 1
	}
	for end := time.Now().Add(5 * time.Second); !gone() && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if _, ok := r.flows.get(flow.Key{Src: r.client, Dst: vip}); ok {
		t.Error("flow still installed after an exact RST")
	}
	if got := r.e.Stats().Expired["reset"]; got != 1 {
		t.Errorf("expired{reset} = %d", got)
	}
}

// TestGivenUpFlowsResetBothEnds: when syngate ends a connection itself
// (idle expiry, eviction) both ends get a RST at their next expected
// sequence number.
func TestGivenUpFlowsResetBothEnds(t *testing.T) {
	for _, evict := range []bool{false, true} {
		r := newRig(t, spec.CookiesNever, func(c *Config) { c.EstablishedTimeout = time.Hour })
		syn, sa := r.spliceTracked()
		kc, kb := flow.Key{Src: r.client, Dst: vip}, flow.Key{Src: backend, Dst: syn.Src}
		// 100 bytes from the client and 2000 from the backend went through, acked.
		r.flows.update(kc, func(s *flow.State) { s.Track.SeqEnd, s.Track.AckMax = 143, 2010 })
		r.flows.update(kb, func(s *flow.State) { s.Track.SeqEnd, s.Track.AckMax = 2010, 143 })
		if evict {
			r.flows.DeleteFlow(kb)
			r.e.expireFlows(r.advance(time.Second))
		} else {
			r.e.expireFlows(r.advance(time.Hour))
		}
		toClient, toBackend := r.sentIP(), r.sentIP()
		if toClient.Flags != packet.RST || toClient.Src != vip || toClient.Dst != r.client || toClient.Seq != sa.Seq+1+2000 {
			t.Errorf("evict %v: RST to the client = %v %v->%v seq %d, want seq %d", evict, toClient.Flags, toClient.Src, toClient.Dst, toClient.Seq, sa.Seq+1+2000)
		}
		// The client's 143 in the backend leg's space (its SYN carried 42).
		if want := syn.Seq + 101; toBackend.Flags != packet.RST || toBackend.Src != syn.Src || toBackend.Dst != backend || toBackend.Seq != want {
			t.Errorf("evict %v: RST to the backend = %v %v->%v seq %d, want seq %d", evict, toBackend.Flags, toBackend.Src, toBackend.Dst, toBackend.Seq, want)
		}
		if _, ok := r.flows.get(kc); ok {
			t.Errorf("evict %v: flow still installed", evict)
		}
		if got := r.e.set.Load().order[0].ServiceStats().ResetsSent; got != 2 {
			t.Errorf("evict %v: resets sent = %d, want 2", evict, got)
		}
	}
}

// TestHalfClosedExpiry: one FIN keeps the connection; both FINs acked start
// the close timeout.
func TestHalfClosedExpiry(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) { c.CloseTimeout = 10 * time.Second })
	syn, _ := r.spliceTracked()
	kc, kb := flow.Key{Src: r.client, Dst: vip}, flow.Key{Src: backend, Dst: syn.Src}
	r.flows.update(kc, func(s *flow.State) { s.FIN, s.FinEnd, s.LastSeen = true, 44, r.mono })
	r.flows.update(kb, func(s *flow.State) { s.Track.AckMax = 44 })
	r.e.expireFlows(r.advance(time.Minute))
	if _, ok := r.flows.get(kc); !ok {
		t.Fatal("a half-closed connection expired")
	}
	r.flows.update(kb, func(s *flow.State) { s.FIN, s.FinEnd, s.LastSeen = true, 11, r.mono })
	r.flows.update(kc, func(s *flow.State) { s.Track.AckMax = 11 })
	r.e.expireFlows(r.advance(5 * time.Second))
	if _, ok := r.flows.get(kc); !ok {
		t.Fatal("closed before the close timeout")
	}
	r.e.expireFlows(r.advance(5 * time.Second))
	if _, ok := r.flows.get(kc); ok {
		t.Fatal("still installed after both FINs were acked and the close timeout passed")
	}
	if got := r.e.Stats().Expired["closed"]; got != 1 {
		t.Errorf("expired{closed} = %d", got)
	}
}

// TestCookieServiceWithoutTimestamps: a service that does not offer
// timestamps must mint cookies as for a client without them, or the ACK
// (which then carries none) would not match.
func TestCookieServiceWithoutTimestamps(t *testing.T) {
	no := false
	r := newRig(t, spec.CookiesAlways, func(c *Config) { c.Services[0].Announce.Timestamps = &no })
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 1, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	sa := r.reply()
	if sa.Options.Timestamps || sa.Options.HasWScale() || sa.Options.SACK {
		t.Errorf("SYN-ACK offers %+v; without timestamps a cookie keeps no options", sa.Options)
	}
	r.inject(packet.Build, packet.Fields{Src: r.client, Dst: vip, Seq: 2, Ack: sa.Seq + 1, Flags: packet.ACK, Window: 64240})
	if syn := r.sentIP(); syn.Flags != packet.SYN || syn.Dst != backend {
		t.Fatalf("the ACK did not validate: %v to %v", syn.Flags, syn.Dst)
	}
}

// TestBackendTimeWait: a backend still holding the source port's previous
// connection in TIME_WAIT answers the SYN with an ACK; the engine clears it
// with a RST, asks again and splices.
func TestBackendTimeWait(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	r.handshake(42, nil)
	syn := r.sentIP()
	r.inject(packet.Build, packet.Fields{Src: backend, Dst: syn.Src, Seq: 777, Ack: 123456, Flags: packet.ACK, Window: 100})
	rst := r.sentIP()
	if rst.Flags != packet.RST || rst.Seq != 123456 || rst.Dst != backend || rst.Src != syn.Src {
		t.Fatalf("answer to a TIME_WAIT ACK = %v seq %d %v->%v, want RST seq 123456", rst.Flags, rst.Seq, rst.Src, rst.Dst)
	}
	again := r.sentIP()
	if again.Flags != packet.SYN || again.Seq != syn.Seq || again.Src != syn.Src {
		t.Fatalf("SYN not sent again: %v seq %d from %v", again.Flags, again.Seq, again.Src)
	}
	r.backendSynAck(again, 9, 7)
	if ack := r.sentIP(); ack.Flags != packet.ACK || ack.Ack != 10 {
		t.Errorf("after the TIME_WAIT was cleared: %v ack %d", ack.Flags, ack.Ack)
	}
	st := r.e.set.Load().order[0].ServiceStats()
	if st.BackendTimeWait != 1 || st.Spliced != 1 {
		t.Errorf("timewait resets %d, spliced %d; want 1, 1", st.BackendTimeWait, st.Spliced)
	}
}

// A backend that ignores the window scale option of our SYN: the client was
// promised scaling (our SYN-ACK announced 7) and reads every window with that
// shift, while the backend sends and reads windows unscaled (RFC 7323 2.2).
func TestSpliceBackendWithoutWindowScale(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	const isn, bisn = 1_000_000, 555_000
	sa := r.handshake(isn, nil)
	if sa.Options.WScale != 7 {
		t.Fatalf("SYN-ACK window scale %d, want 7", sa.Options.WScale)
	}
	syn := r.sentIP()
	r.backendSynAck(syn, bisn, flow.NoWScale)
	if ack := r.sentIP(); ack.Window != min(502<<9, 65535) {
		t.Errorf("backend ACK window %d, want the client's 502 read with its shift 9 (capped at 65535)", ack.Window)
	}
	toClient, ok := r.flows.get(flow.Key{Src: backend, Dst: syn.Src})
	if !ok {
		t.Fatal("no backend->client flow installed")
	}
	if n := toClient.NAT; n.InShift != 0 || n.OutShift != 7 {
		t.Errorf("backend->client shifts %d->%d, want 0 (unscaled backend) -> 7 (announced to the client)", n.InShift, n.OutShift)
	}
	toBackend, ok := r.flows.get(flow.Key{Src: r.client, Dst: vip})
	if !ok {
		t.Fatal("no client->backend flow installed")
	}
	if n := toBackend.NAT; n.InShift != 9 || n.OutShift != 0 {
		t.Errorf("client->backend shifts %d->%d, want 9 (the client's) -> 0 (unscaled backend)", n.InShift, n.OutShift)
	}
	// The slow path agrees with the fast path.
	r.inject(packet.Build, packet.Fields{
		Src: backend, Dst: syn.Src, Seq: bisn + 1, Ack: isn + 1, Flags: packet.ACK, Window: 64000,
		Options: flow.SynOptions{Timestamps: true, TSval: 777010, TSecr: 5001},
	})
	if fwd := r.sentIP(); fwd.Window != 64000>>7 {
		t.Errorf("slow-path window to the client %d, want 64000>>7 = %d", fwd.Window, 64000>>7)
	}
}

// ECN is agreed with a client that asks for it only when the backend is
// known to do ECN, on both SYN-ACK paths, and the backend SYN asks for it.
func TestECN(t *testing.T) {
	for _, tc := range []struct {
		name          string
		policy        spec.CookiePolicy
		backendECN    bool // what the probe learned
		synAckECE     bool // the backend's SYN-ACK
		wantECN       bool
		wantCountedAs string
	}{
		{"queue, backend does ECN", spec.CookiesNever, true, true, true, ecnNegotiated},
		{"cookie, backend does ECN", spec.CookiesAlways, true, true, true, ecnNegotiated},
		{"queue, backend without ECN", spec.CookiesNever, false, false, false, ecnNotOffered},
		{"cookie, backend without ECN", spec.CookiesAlways, false, false, false, ecnNotOffered},
		{"queue, backend changed its mind", spec.CookiesNever, true, false, true, ecnBackendRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.policy, nil)
			if err := r.e.SetBackendOptions("web", flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, ECN: tc.backendECN}); err != nil {
				t.Fatal(err)
			}
			const isn = 1_000_000
			opts := clientSynOpts
			opts.ECN = true
			r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: isn, Flags: packet.SYN, Window: 64240, Options: opts})
			sa := r.reply()
			if got := sa.Flags&packet.ECE != 0; got != tc.wantECN {
				t.Errorf("SYN-ACK ECE %v, want %v", got, tc.wantECN)
			}
			r.inject(packet.Build, packet.Fields{
				Src: r.client, Dst: vip, Seq: isn + 1, Ack: sa.Seq + 1, Flags: packet.ACK, Window: 502,
				Options: flow.SynOptions{Timestamps: true, TSval: 5001, TSecr: sa.Options.TSval},
			})
			syn := r.sentIP()
			if got := syn.Flags&(packet.ECE|packet.CWR) == packet.ECE|packet.CWR; got != tc.wantECN {
				t.Errorf("backend SYN asks for ECN: %v, want %v (flags %v)", got, tc.wantECN, syn.Flags)
			}
			f := packet.Fields{
				Src: backend, Dst: syn.Src, Seq: 555_000, Ack: syn.Seq + 1, Flags: packet.SYN | packet.ACK, Window: 65160,
				Options: flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 777000, TSecr: syn.Options.TSval, ECN: tc.synAckECE},
			}
			r.inject(packet.BuildSynAck, f)
			r.sentIP() // the ACK
			got := r.e.set.Load().order[0].ServiceStats().ECN
			for _, k := range ecnResults {
				want := uint64(0)
				if k == tc.wantCountedAs {
					want = 1
				}
				if got[k] != want {
					t.Errorf("ecn_total %v, want one %s", got, tc.wantCountedAs)
				}
			}
		})
	}
}

// A SYN with data (TCP Fast Open) is answered at once with a SYN-ACK that
// acknowledges only the SYN.
func TestSYNWithData(t *testing.T) {
	for _, policy := range []spec.CookiePolicy{spec.CookiesNever, spec.CookiesAlways} {
		r := newRig(t, policy, nil)
		const isn = 7_000
		r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: isn, Flags: packet.SYN, Window: 64240, Options: clientSynOpts, Payload: []byte("GET / HTTP/1.0\r\n\r\n")})
		sa := r.reply()
		if sa.Flags&(packet.SYN|packet.ACK) != packet.SYN|packet.ACK || sa.Ack != isn+1 || len(sa.Payload) != 0 {
			t.Errorf("policy %v: SYN-ACK %v ack %d payload %d; want the SYN alone acknowledged (%d)", policy, sa.Flags, sa.Ack, len(sa.Payload), isn+1)
		}
		if got := r.e.set.Load().order[0].ServiceStats().SynData; got != 1 {
			t.Errorf("policy %v: syn_data_total %d, want 1", policy, got)
		}
	}
}

// The MSS announced to the client and sent to the backend fits the
// gateway's smallest interface.
func TestMSSClampedToLinkMTU(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) { c.LinkMTU = 1200 })
	sa := r.handshake(1_000, nil)
	if sa.Options.MSS != 1160 {
		t.Errorf("SYN-ACK MSS %d, want 1200-40", sa.Options.MSS)
	}
	syn := r.sentIP()
	if syn.Options.MSS != 1160 {
		t.Errorf("backend SYN MSS %d, want 1200-40", syn.Options.MSS)
	}
	got := r.e.set.Load().order[0].ServiceStats().MSSClamped
	if got[legClient] != 1 || got[legBackend] != 1 {
		t.Errorf("mss_clamped_total %v, want one per leg", got)
	}
}

// TestBackendRefusedLateSegment: the client's data, sent right after its
// handshake ACK, reaches the engine after the backend refused the leg and
// the client was reset. Its ACK still carries the SYN-ACK's ISN, a cookie
// (queued handshakes get cookie ISNs too), so it would validate as a new
// handshake and open a second backend leg for a connection the client no
// longer has. It gets a RST instead, as a TCP stack answers a segment of a
// connection it reset.
func TestBackendRefusedLateSegment(t *testing.T) {
	r := newRig(t, spec.CookiesAuto, nil)
	sa := r.handshake(42, nil)
	syn := r.sentIP()
	r.inject(packet.Build, packet.Fields{Src: backend, Dst: syn.Src, Seq: 0, Ack: syn.Seq + 1, Flags: packet.RST | packet.ACK})
	if rst := r.sentIP(); rst.Flags&packet.RST == 0 || rst.Dst != r.client {
		t.Fatalf("client RST = %v to %v", rst.Flags, rst.Dst)
	}
	late := packet.Fields{
		Src: r.client, Dst: vip, Seq: 43, Ack: sa.Seq + 1, Flags: packet.ACK | packet.PSH, Window: 502,
		Options: flow.SynOptions{Timestamps: true, TSval: 5002, TSecr: sa.Options.TSval}, Payload: []byte("hello"),
	}
	r.inject(packet.Build, late)
	if rst := r.reply(); rst.Flags&packet.RST == 0 || rst.Dst != r.client || rst.Seq != sa.Seq+1 {
		t.Errorf("answer to the late segment = %v to %v seq %d, want a RST at %d", rst.Flags, rst.Dst, rst.Seq, sa.Seq+1)
	}
	r.noSentIP() // no second backend SYN
	st := r.e.set.Load().order[0].ServiceStats()
	if got := st.BackendFailures["refused"]; got != 1 {
		t.Errorf("refused = %d, want 1", got)
	}
	if got := st.AckRejected["recently_reset"]; got != 1 {
		t.Errorf("ack_rejected{recently_reset} = %d, want 1", got)
	}
	if r.e.conns.n.Load() != 0 {
		t.Errorf("connection still tracked")
	}
	// A new connection on the same 4-tuple (a new SYN, a new ISN) opens as
	// usual.
	r.advance(time.Second)
	r.handshake(5000, nil)
	if syn2 := r.sentIP(); syn2.Flags != packet.SYN {
		t.Errorf("new connection on the tuple: backend got %v, want a SYN", syn2.Flags)
	}
}

// TestBackendSynAckRepeat: the backend's own SYN-ACK again, after the
// splice, means the handshake's ACK to it was lost: the engine sends that
// ACK again and forwards nothing to the client. A SYN-ACK that is not the
// backend's (another ISN) gets a challenge ACK instead, as from the client.
func TestBackendSynAckRepeat(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	syn, _ := r.spliceTracked()
	r.backendSynAck(syn, 9, 7)
	ack := r.sentIP()
	if ack.Flags != packet.ACK || ack.Dst != backend || ack.Src != syn.Src || ack.Seq != syn.Seq+1 || ack.Ack != 10 {
		t.Fatalf("answer to the repeated SYN-ACK: %v %v->%v seq %d ack %d; want the handshake's ACK (seq %d ack 10) to the backend",
			ack.Flags, ack.Src, ack.Dst, ack.Seq, ack.Ack, syn.Seq+1)
	}
	if !ack.Options.Timestamps || ack.Options.TSecr != 777000 {
		t.Errorf("the repeated ACK's timestamps: %+v, want TSecr 777000", ack.Options)
	}
	r.noSentIP()
	st := r.e.set.Load().order[0].ServiceStats()
	if st.BackendSynAckRepeat != 1 || st.ChallengeACKSent != 0 {
		t.Errorf("synack repeats %d, challenge ACKs %d; want 1, 0", st.BackendSynAckRepeat, st.ChallengeACKSent)
	}
	r.backendSynAck(syn, 12345, 7)
	if c := r.sentIP(); c.Flags != packet.ACK || c.Dst != backend {
		t.Fatalf("answer to a foreign SYN-ACK: %v to %v, want a challenge ACK to the backend", c.Flags, c.Dst)
	}
	r.noSentIP()
	st = r.e.set.Load().order[0].ServiceStats()
	if st.BackendSynAckRepeat != 1 || st.ChallengeACKSent != 1 {
		t.Errorf("synack repeats %d, challenge ACKs %d; want 1, 1", st.BackendSynAckRepeat, st.ChallengeACKSent)
	}
}

// TestHeldAggregateCut: a client segment larger than the leg's MSS (the TC
// program hands a local sender's first flight over as one aggregate) goes
// to the backend cut to the MSS less the timestamp option, in order, with
// PSH on the last piece only.
func TestHeldAggregateCut(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	syn, _ := r.spliceTracked()
	c := r.e.conns.bySource(legKey{source: syn.Src, backend: backend})
	if c == nil {
		t.Fatal("no connection for the leg")
	}
	data := make([]byte, 4000)
	for i := range data {
		data[i] = byte(i)
	}
	c.mu.Lock()
	mss := c.legMSS()
	e := r.e
	e.toBackend(c, heldSegment{seq: 43, ack: 0, flags: uint8(packet.ACK | packet.PSH), window: 502, ts: true, tsval: 6000, tsecr: 0, data: data})
	c.mu.Unlock()
	room := int(mss) - 12
	var got []byte
	for len(got) < len(data) {
		s := r.sentIP()
		last := len(got)+len(s.Payload) == len(data)
		if s.Dst != backend || s.Seq != syn.Seq+1+uint32(len(got)) || len(s.Payload) > room || s.Flags&packet.PSH != 0 != last || !s.Options.Timestamps {
			t.Fatalf("piece at %d: %v seq %d (want %d), %d bytes (at most %d), timestamps %v",
				len(got), s.Flags, s.Seq, syn.Seq+1+uint32(len(got)), len(s.Payload), room, s.Options.Timestamps)
		}
		got = append(got, s.Payload...)
	}
	if !bytes.Equal(got, data) {
		t.Error("the pieces do not add up to the segment")
	}
	if n := (len(data) + room - 1) / room; n != 3 {
		t.Errorf("%d pieces expected for MSS %d; the test wants a cut", n, mss)
	}
	r.noSentIP()
}
