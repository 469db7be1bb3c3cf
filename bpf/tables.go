package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// Address families as the program stores them.
const (
	afInet  = unix.AF_INET
	afInet6 = unix.AF_INET6
)

// addr16 returns the family and the 16-byte form the maps use: IPv4 (and
// IPv4-mapped IPv6) as ::ffff:a.b.c.d, as netip.Addr.As16 gives it.
func addr16(a netip.Addr) (uint32, [16]byte, error) {
	if !a.IsValid() {
		return 0, [16]byte{}, fmt.Errorf("address %v: %w", a, ErrInvalid)
	}
	a = a.Unmap()
	if a.Zone() != "" {
		a = a.WithZone("")
	}
	if a.Is4() {
		return afInet, a.As16(), nil
	}
	return afInet6, a.As16(), nil
}

func fromAddr16(family uint32, b [16]byte) netip.Addr {
	a := netip.AddrFrom16(b)
	if family == afInet {
		return a.Unmap()
	}
	return a
}

// hton16 and ntoh16 convert a port to and from the network-order value the
// maps hold in a native-endian uint16.
func hton16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func ntoh16(v uint16) uint16 { return hton16(v) }

func notFound(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// defaultMaxFlows sizes the flow table when Config.MaxFlows is zero; the
// size written in syngate.c is only what the object declares.
const defaultMaxFlows = spec.DefaultFlowsMax

// Mirrors of SVC_F_* in syngate.c.
const (
	svcNoRateLimit    = 0x1
	svcXDPCookies     = 0x2
	svcStandbyCookies = 0x4
)

// Mirrors of ANN_* in syngate.c.
const (
	annSACK       = 0x1
	annTimestamps = 0x2
	annECN        = 0x4
)

// serviceValue packs a service's data-path entry into the services map's
// value: the one place that knows the C struct's layout. Offer is what
// the program's cookie SYN-ACKs (Offload, Standby) offer, as the engine's
// packet.ReplySynAck would: each option only if the SYN carried it, and
// window scale and SACK-permitted only with timestamps, the only place a
// cookie can keep them; its MSS is min(Offer.MSS, the cookie's MSS table
// entry for the SYN's MSS), the table entry alone when zero.
func serviceValue(e spec.Entry) (syngateSvcVal, error) {
	a := e.Offer
	if (e.Offload || e.Standby) && a.Window == 0 {
		return syngateSvcVal{}, fmt.Errorf("xdp cookies with a zero window: %w", ErrInvalid)
	}
	if a.WScale > flow.MaxWScale && a.WScale != flow.NoWScale {
		return syngateSvcVal{}, fmt.Errorf("window scale %d above %d: %w", a.WScale, flow.MaxWScale, ErrInvalid)
	}
	v := syngateSvcVal{Id: e.ID, AnnMss: a.MSS, AnnWindow: a.Window, AnnWscale: a.WScale}
	if e.Offload {
		v.Flags |= svcXDPCookies
	}
	if e.Standby {
		v.Flags |= svcStandbyCookies
	}
	if e.NoRateLimit {
		v.Flags |= svcNoRateLimit
	}
	if a.SACK {
		v.AnnFlags |= annSACK
	}
	if a.Timestamps {
		v.AnnFlags |= annTimestamps
	}
	if a.ECN {
		v.AnnFlags |= annECN
	}
	return v, nil
}

// entryFrom unpacks a services map entry.
func entryFrom(listen netip.AddrPort, v *syngateSvcVal) spec.Entry {
	return spec.Entry{
		Listen: listen, ID: v.Id,
		Offload:     v.Flags&svcXDPCookies != 0,
		Standby:     v.Flags&svcStandbyCookies != 0,
		NoRateLimit: v.Flags&svcNoRateLimit != 0,
		Offer: spec.Offer{
			Window: v.AnnWindow, MSS: v.AnnMss, WScale: v.AnnWscale,
			SACK: v.AnnFlags&annSACK != 0, Timestamps: v.AnnFlags&annTimestamps != 0,
			ECN: v.AnnFlags&annECN != 0,
		},
	}
}

func serviceKey(ap netip.AddrPort) (syngateSvcKey, error) {
	fam, a, err := addr16(ap.Addr())
	if err != nil {
		return syngateSvcKey{}, fmt.Errorf("service %v: %w", ap, err)
	}
	return syngateSvcKey{Addr: a, Port: hton16(ap.Port()), Family: uint8(fam)}, nil
}

// SetService adds or replaces a protected service's entry. The program
// steers its SYNs and handshake ACKs to AF_XDP, or answers its SYNs with
// cookies itself (spec.Entry.Offload, Standby; those need a fresh key, see
// SetCookieKey, and leave to the engine the SYNs the program does not
// parse: a spliced 4-tuple, IPv4 options, IPv6 extension headers,
// malformed MSS, window scale or SACK-permitted options). The engine
// still gets and validates the ACKs.
func (d *Dataplane) SetService(e spec.Entry) error {
	k, err := serviceKey(e.Listen)
	if err != nil {
		return fmt.Errorf("set service: %w", err)
	}
	v, err := serviceValue(e)
	if err != nil {
		return fmt.Errorf("set service %v: %w", e.Listen, err)
	}
	if err := d.objs.Services.Put(k, v); err != nil {
		return fmt.Errorf("set service %v: %w", e.Listen, err)
	}
	return nil
}

// DeleteService stops protecting a VIP:port. New SYNs to it pass to the
// kernel; its spliced flows keep running until deleted.
func (d *Dataplane) DeleteService(addr netip.AddrPort) error {
	k, err := serviceKey(addr)
	if err != nil {
		return fmt.Errorf("delete service: %w", err)
	}
	if err := d.objs.Services.Delete(k); err != nil {
		return fmt.Errorf("delete service %v: %w", addr, notFound(err))
	}
	return nil
}

// Services lists the protected services (e.g. after a restart reusing
// pinned maps).
func (d *Dataplane) Services() ([]spec.Entry, error) {
	var (
		k   syngateSvcKey
		v   syngateSvcVal
		out []spec.Entry
	)
	it := d.objs.Services.Iterate()
	for it.Next(&k, &v) {
		addr := netip.AddrPortFrom(fromAddr16(uint32(k.Family), k.Addr), ntoh16(k.Port))
		out = append(out, entryFrom(addr, &v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	return out, nil
}

func localKey(a netip.Addr) (syngateLocalKey, error) {
	fam, b, err := addr16(a)
	if err != nil {
		return syngateLocalKey{}, fmt.Errorf("local %v: %w", a, err)
	}
	return syngateLocalKey{Addr: b, Family: fam}, nil
}

// AddLocal declares a backend-side source address of syngate: segments to it
// within Config.LocalPorts are classified like service traffic.
func (d *Dataplane) AddLocal(addr netip.Addr) error {
	k, err := localKey(addr)
	if err != nil {
		return fmt.Errorf("add local: %w", err)
	}
	if err := d.objs.Locals.Put(k, uint32(1)); err != nil {
		return fmt.Errorf("add local %v: %w", addr, err)
	}
	return nil
}

// DeleteLocal forgets a backend-side source address.
func (d *Dataplane) DeleteLocal(addr netip.Addr) error {
	k, err := localKey(addr)
	if err != nil {
		return fmt.Errorf("delete local: %w", err)
	}
	if err := d.objs.Locals.Delete(k); err != nil {
		return fmt.Errorf("delete local %v: %w", addr, notFound(err))
	}
	return nil
}

// Locals lists the backend-side source addresses (e.g. after a restart
// reusing pinned maps).
func (d *Dataplane) Locals() ([]netip.Addr, error) {
	var (
		k   syngateLocalKey
		v   uint32
		out []netip.Addr
	)
	it := d.objs.Locals.Iterate()
	for it.Next(&k, &v) {
		out = append(out, fromAddr16(k.Family, k.Addr))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list locals: %w", err)
	}
	return out, nil
}

// RegisterSocket makes the AF_XDP socket fd, bound to queue of the
// interface ifindex, receive the packets the program steers from that
// interface and queue, replacing any socket registered there before. Each
// interface gets its own slot on its first socket (so every interface's
// queue 0 has its own socket); at most MaxInterfaces interfaces and queues
// below MaxQueues. Registering before Attach is fine and avoids dropping
// the first SYNs. The map holds its own reference; the caller keeps owning
// fd.
func (d *Dataplane) RegisterSocket(ifindex, queue, fd int) error {
	if ifindex <= 0 || ifindex > 1<<31-1 || queue < 0 || queue >= MaxQueues || fd < 0 {
		return fmt.Errorf("register socket fd %d on ifindex %d queue %d: %w", fd, ifindex, queue, ErrInvalid)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.slots[ifindex]
	if !ok {
		free := d.freeSlot()
		if free < 0 {
			return fmt.Errorf("register socket fd %d on ifindex %d queue %d: all %d slots taken: %w",
				fd, ifindex, queue, MaxInterfaces, ErrTooManyInterfaces)
		}
		s = ifSlot{slot: free}
	}
	if err := d.objs.Xsks.Put(uint32(s.slot*MaxQueues+queue), uint32(fd)); err != nil {
		return fmt.Errorf("register socket fd %d on ifindex %d queue %d: %w", fd, ifindex, queue, classify(err))
	}
	if !ok {
		// The socket is in place before the program can find the slot.
		if err := d.objs.Ifslots.Put(uint32(ifindex), uint32(s.slot)); err != nil {
			_ = d.objs.Xsks.Delete(uint32(s.slot*MaxQueues + queue))
			return fmt.Errorf("register socket fd %d on ifindex %d queue %d: add interface slot: %w", fd, ifindex, queue, classify(err))
		}
	}
	s.queues |= 1 << queue
	d.slots[ifindex] = s
	return nil
}

// UnregisterSocket stops steering an interface queue's packets to AF_XDP;
// they are then dropped and counted as VerdictDropNoSocket. The interface's
// slot is freed with its last socket. Unregistering a queue without a socket
// returns ErrNotFound.
func (d *Dataplane) UnregisterSocket(ifindex, queue int) error {
	if ifindex <= 0 || ifindex > 1<<31-1 || queue < 0 || queue >= MaxQueues {
		return fmt.Errorf("unregister socket on ifindex %d queue %d: %w", ifindex, queue, ErrInvalid)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.slots[ifindex]
	if !ok || s.queues&(1<<queue) == 0 {
		return fmt.Errorf("unregister socket on ifindex %d queue %d: %w", ifindex, queue, ErrNotFound)
	}
	if err := d.objs.Xsks.Delete(uint32(s.slot*MaxQueues + queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unregister socket on ifindex %d queue %d: %w", ifindex, queue, err)
	}
	s.queues &^= 1 << queue
	if s.queues != 0 {
		d.slots[ifindex] = s
		return nil
	}
	if err := d.objs.Ifslots.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		d.slots[ifindex] = s // keep the slot reserved: the program may still use it
		return fmt.Errorf("unregister socket on ifindex %d queue %d: free interface slot: %w", ifindex, queue, err)
	}
	delete(d.slots, ifindex)
	return nil
}

// freeSlot returns the lowest slot no interface holds, or -1. d.mu is held.
func (d *Dataplane) freeSlot() int {
	var used [MaxInterfaces]bool
	for _, s := range d.slots {
		used[s.slot] = true
	}
	for i, u := range used {
		if !u {
			return i
		}
	}
	return -1
}

// flowKey encodes a flow key as the flows map holds it.
func flowKey(k flow.Key) (syngateFlowKey, error) {
	fs, s, err := addr16(k.Src.Addr())
	if err != nil {
		return syngateFlowKey{}, fmt.Errorf("flow %v: %w", k, err)
	}
	fd, dst, err := addr16(k.Dst.Addr())
	if err != nil {
		return syngateFlowKey{}, fmt.Errorf("flow %v: %w", k, err)
	}
	if fs != fd {
		return syngateFlowKey{}, fmt.Errorf("flow %v: mixed address families: %w", k, ErrInvalid)
	}
	return syngateFlowKey{Saddr: s, Daddr: dst, Sport: hton16(k.Src.Port()), Dport: hton16(k.Dst.Port()), Family: fs}, nil
}

func flowKeyFrom(k syngateFlowKey) flow.Key {
	return flow.Key{
		Src: netip.AddrPortFrom(fromAddr16(k.Family, k.Saddr), ntoh16(k.Sport)),
		Dst: netip.AddrPortFrom(fromAddr16(k.Family, k.Daddr), ntoh16(k.Dport)),
	}
}

// Flow flags, mirrors of FLOW_F_* in syngate.c.
const (
	flowFIN     = 0x1
	flowRST     = 0x2
	flowTracked = 0x4
	flowTS      = 0x8
	flowResync  = 0x10
)

// flowValue encodes a translation for a key of the given family as the
// flows map holds it.
func flowValue(n flow.NAT, family uint32) (syngateFlowVal, error) {
	fs, s, err := addr16(n.Src.Addr())
	if err != nil {
		return syngateFlowVal{}, err
	}
	fd, dst, err := addr16(n.Dst.Addr())
	if err != nil {
		return syngateFlowVal{}, err
	}
	if fs != family || fd != family {
		return syngateFlowVal{}, fmt.Errorf("translation changes the address family: %w", ErrInvalid)
	}
	if n.InShift > flow.MaxWScale || n.OutShift > flow.MaxWScale {
		return syngateFlowVal{}, fmt.Errorf("window shift %d/%d above %d: %w", n.InShift, n.OutShift, flow.MaxWScale, ErrInvalid)
	}
	if n.Ifindex < 0 || n.Ifindex > 1<<31-1 {
		return syngateFlowVal{}, fmt.Errorf("ifindex %d: %w", n.Ifindex, ErrInvalid)
	}
	return syngateFlowVal{
		Saddr: s, Daddr: dst,
		Sport: hton16(n.Src.Port()), Dport: hton16(n.Dst.Port()),
		SeqDelta: n.SeqDelta, AckDelta: n.AckDelta,
		TsvalDelta: n.TSvalDelta, TsecrDelta: n.TSecrDelta,
		Ifindex: uint32(n.Ifindex), Smac: n.SrcMAC, Dmac: n.DstMAC,
		InShift: n.InShift, OutShift: n.OutShift,
	}, nil
}

func flowStateFrom(v *syngateFlowVal) flow.State {
	fam := uint32(afInet6)
	if netip.AddrFrom16(v.Saddr).Is4In6() {
		fam = afInet
	}
	return flow.State{
		NAT: flow.NAT{
			Src:      netip.AddrPortFrom(fromAddr16(fam, v.Saddr), ntoh16(v.Sport)),
			Dst:      netip.AddrPortFrom(fromAddr16(fam, v.Daddr), ntoh16(v.Dport)),
			SeqDelta: v.SeqDelta, AckDelta: v.AckDelta,
			TSvalDelta: v.TsvalDelta, TSecrDelta: v.TsecrDelta,
			InShift: v.InShift, OutShift: v.OutShift,
			Ifindex: int(v.Ifindex), SrcMAC: v.Smac, DstMAC: v.Dmac,
		},
		LastSeen: time.Duration(v.LastSeenNs),
		FIN:      v.Flags&flowFIN != 0,
		RST:      v.Flags&flowRST != 0,
		Tracked:  v.Flags&flowTracked != 0,
		Track:    flow.Track{SeqEnd: v.SeqEnd, AckMax: v.AckMax, WinEnd: v.WinEnd, WinMax: v.WinMax, WScale: v.Wscale},
		FinEnd:   v.FinEnd,
		TSRecent: v.TsRecent,
		HasTS:    v.Flags&flowTS != 0,
		Resync:   v.Flags&flowResync != 0,
		Packets:  v.Packets,
		Bytes:    v.Bytes,
	}
}

// InstallFlow makes the fast path splice packets matching key, replacing any
// entry (and its counters), without sequence tracking: any FIN or RST marks
// the flow. Connections are installed with InstallTrackedFlow; this is for
// tools and tests of the translation alone.
func (d *Dataplane) InstallFlow(key flow.Key, nat flow.NAT) error {
	return d.installFlow(key, nat, nil)
}

// InstallTrackedFlow is InstallFlow with the sender's sequence state seeded
// from the handshake. Segments are judged only when both directions of the
// connection are tracked; install both.
func (d *Dataplane) InstallTrackedFlow(key flow.Key, nat flow.NAT, tr flow.Track) error {
	return d.installFlow(key, nat, &tr)
}

func (d *Dataplane) installFlow(key flow.Key, nat flow.NAT, tr *flow.Track) error {
	k, err := flowKey(key)
	if err != nil {
		return fmt.Errorf("install flow: %w", err)
	}
	v, err := flowValue(nat, k.Family)
	if err != nil {
		return fmt.Errorf("install flow %v: %w", key, err)
	}
	if tr != nil {
		if tr.WScale > flow.MaxWScale {
			return fmt.Errorf("install flow %v: window scale %d above %d: %w", key, tr.WScale, flow.MaxWScale, ErrInvalid)
		}
		v.Flags |= flowTracked
		v.SeqEnd, v.AckMax, v.WinEnd, v.WinMax, v.Wscale = tr.SeqEnd, tr.AckMax, tr.WinEnd, tr.WinMax, tr.WScale
	}
	if err := d.putFlow(&k, &v); err != nil {
		if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) {
			// A hash map at max_entries refuses with E2BIG (or ENOMEM
			// when an on-demand entry cannot be allocated).
			return fmt.Errorf("install flow %v: %w: %w", key, ErrFlowTableFull, err)
		}
		return fmt.Errorf("install flow %v: %w", key, err)
	}
	return nil
}

// DeleteFlow removes one direction of a spliced connection.
func (d *Dataplane) DeleteFlow(key flow.Key) error {
	k, err := flowKey(key)
	if err != nil {
		return fmt.Errorf("delete flow: %w", err)
	}
	if err := d.objs.Flows.Delete(&k); err != nil {
		return fmt.Errorf("delete flow %v: %w", key, notFound(err))
	}
	d.hint.sub(flowHintIndex(&k))
	return nil
}

// putFlow adds or replaces a flow entry, counted in the flow hint: a new
// entry's count goes up before it exists; a replaced one was counted.
func (d *Dataplane) putFlow(k *syngateFlowKey, v *syngateFlowVal) error {
	for {
		i := d.hint.add(k)
		err := d.objs.Flows.Update(k, v, ebpf.UpdateNoExist)
		if err == nil {
			return nil
		}
		d.hint.sub(i)
		if !errors.Is(err, ebpf.ErrKeyExist) {
			return err
		}
		// Replaced in place; if it was deleted meanwhile, add it anew.
		if err := d.objs.Flows.Update(k, v, ebpf.UpdateExist); !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
}

// RaiseSeqEnd moves a tracked flow's seq_end (its sender's SND.NXT as
// the program knows it) up to seqEnd, for data the sender sent while the
// program could not learn from it: a tracked direction is judged, and
// learns, only once the reverse one is installed too. Everything else in
// the entry is kept; an untracked entry, or one already at or past seqEnd,
// is left alone. Read and written back whole, so the program's updates to
// the entry in between (its counters, its flags) are lost: call it while
// nothing learns from the entry, before the reverse direction exists.
func (d *Dataplane) RaiseSeqEnd(key flow.Key, seqEnd uint32) error {
	k, err := flowKey(key)
	if err != nil {
		return fmt.Errorf("raise seq_end: %w", err)
	}
	var v syngateFlowVal
	if err := d.objs.Flows.Lookup(&k, &v); err != nil {
		return fmt.Errorf("raise seq_end of flow %v: %w", key, notFound(err))
	}
	if v.Flags&flowTracked == 0 || int32(seqEnd-v.SeqEnd) <= 0 {
		return nil
	}
	v.SeqEnd = seqEnd
	if err := d.objs.Flows.Update(&k, &v, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("raise seq_end of flow %v: %w", key, notFound(err))
	}
	return nil
}

// LookupFlow returns one flow entry, for expiry decisions.
func (d *Dataplane) LookupFlow(key flow.Key) (flow.State, error) {
	k, err := flowKey(key)
	if err != nil {
		return flow.State{}, fmt.Errorf("lookup flow: %w", err)
	}
	if !d.hint.mayHave(&k) {
		// No system call for what the engine asks most: a port's or a
		// reused 4-tuple's entry that is not there.
		return flow.State{}, fmt.Errorf("lookup flow %v: %w: %w", key, ErrNotFound, ebpf.ErrKeyNotExist)
	}
	var v syngateFlowVal
	if err := d.objs.Flows.Lookup(&k, &v); err != nil {
		return flow.State{}, fmt.Errorf("lookup flow %v: %w", key, notFound(err))
	}
	return flowStateFrom(&v), nil
}

// flowBatch is how many flow entries IterateFlows reads per system call:
// two million entries take about 500 calls instead of four million.
const flowBatch = 4096

// IterateFlows calls fn for every flow entry until fn returns false. Entries
// added or removed meanwhile may or may not be seen.
func (d *Dataplane) IterateFlows(fn func(flow.Key, flow.State) bool) error {
	keys := make([]syngateFlowKey, flowBatch)
	vals := make([]syngateFlowVal, flowBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Flows.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if !fn(flowKeyFrom(keys[i]), flowStateFrom(&vals[i])) {
				return nil
			}
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("iterate flows: %w", err)
		}
	}
}

// Counters returns the packet and byte count of every verdict, summed over
// CPUs, since the counters map was created (pinned maps keep counting across
// restarts).
func (d *Dataplane) Counters() (Counters, error) {
	var (
		out    Counters
		perCPU []syngateCounter
	)
	for i := range out {
		if err := d.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return out, fmt.Errorf("read counter %v: %w", Verdict(i), err)
		}
		for _, c := range perCPU {
			out[i].Packets += c.Packets
			out[i].Bytes += c.Bytes
		}
	}
	return out, nil
}

// ReadPinnedFlows calls fn for every entry of the flow table pinned at path
// (a pin directory's "flows") until fn returns false: for tools and tests
// that look at a table no loaded Dataplane of theirs owns. Values are read
// by their common leading bytes, as a migration copies them.
func ReadPinnedFlows(path string, fn func(flow.Key, flow.State) bool) error {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return fmt.Errorf("read pinned flows: %w", err)
	}
	defer m.Close()
	var k, v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		var fk syngateFlowKey
		if _, err := binary.Decode(k, binary.NativeEndian, &fk); err != nil {
			return fmt.Errorf("read pinned flows: key: %w", err)
		}
		var fv syngateFlowVal
		if err := decodePrefix(v, &fv); err != nil {
			return fmt.Errorf("read pinned flows: value: %w", err)
		}
		if !fn(flowKeyFrom(fk), flowStateFrom(&fv)) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read pinned flows: %w", err)
	}
	return nil
}
