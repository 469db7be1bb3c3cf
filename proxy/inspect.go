package proxy

import (
	"errors"
	"net/netip"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// ServiceState is what an operator asks of a service besides its counters:
// its addresses, its cookie policy and whether cookies are being sent, and
// what its SYN-ACKs announce now.
type ServiceState struct {
	Name   string
	Listen netip.AddrPort
	// Backends are the pool's members in order, with their health.
	Backends []BackendHealth
	Sources  []netip.Addr // the backend legs' source addresses
	Policy   string       // cookie policy: never, auto, always
	// XDPCookies: the data plane answers the service's SYNs with cookies
	// (always, or auto after the half-open queue overflowed).
	XDPCookies bool
	Offer      spec.Offer
	// LastFailure is the latest failed backend leg; nil: none yet.
	LastFailure *BackendFailure
}

// ServiceStates lists the services in configuration order.
func (e *Engine) ServiceStates() []ServiceState {
	order := e.set.Load().order
	out := make([]ServiceState, len(order))
	health := e.health(order)
	for i, s := range order {
		out[i] = ServiceState{
			Name: s.Name, Listen: s.Listen, Backends: health[i].Backends, Sources: s.Sources,
			Policy: string(s.Cookies), XDPCookies: s.offloaded.Load(), Offer: s.offer.Load().Offer,
			LastFailure: s.st.lastFailure.Load(),
		}
	}
	return out
}

// ConnInfo is one connection the engine tracks, as `syngate flows` shows
// it: the client leg (Client -> Service) and the backend leg (Source ->
// Backend), and for a spliced one the XDP flow entries of both directions.
type ConnInfo struct {
	Service string
	Client  flow.Tuple     // client address and the VIP:port it reached
	Source  netip.AddrPort // syngate's side of the backend leg; invalid before the backend SYN
	Backend netip.AddrPort
	Created time.Time // the client's handshake was validated
	Spliced time.Time // zero while the backend leg opens
	// ToBackend and ToClient are the flow entries (client -> backend and
	// backend -> client) of a spliced connection; Found is false when the
	// entry could not be read.
	ToBackend, ToClient FlowCounters
}

// FlowCounters are one direction's flow-table counters.
type FlowCounters struct {
	Found    bool
	Packets  uint64
	Bytes    uint64
	LastSeen time.Time // zero: no packet yet
	FIN, RST bool
}

// Conns calls fn for every connection the engine tracks, opening or
// spliced, that want selects (nil: all), reading the flow entries of the
// spliced ones it selected; want sees a ConnInfo without them. fn returns
// false to stop. It takes each connection's lock briefly and is meant for
// operators, not the packet path.
func (e *Engine) Conns(want func(*ConnInfo) bool, fn func(ConnInfo) bool) {
	mono, wall := e.cfg.Monotonic(), e.now()
	stop := false
	e.conns.each(false, func(c *conn) {
		if stop {
			return
		}
		c.mu.Lock()
		ci := ConnInfo{
			Service: c.svc.Name, Client: c.client, Source: c.source, Backend: c.backendAddr(),
			Created: c.created,
		}
		state := c.state
		if state == stateSpliced {
			ci.Spliced = c.splicedAt
		}
		c.mu.Unlock()
		if state == stateDone || (want != nil && !want(&ci)) {
			return
		}
		if state == stateSpliced {
			ci.ToBackend = e.flowCounters(flow.ClientKey(ci.Client), mono, wall)
			ci.ToClient = e.flowCounters(flow.Key{Src: ci.Backend, Dst: ci.Source}, mono, wall)
		}
		stop = !fn(ci)
	})
}

func (e *Engine) flowCounters(k flow.Key, mono time.Duration, wall time.Time) FlowCounters {
	st, err := e.cfg.Datapath.LookupFlow(k)
	if err != nil {
		if !errors.Is(err, flow.ErrNotFound) {
			e.log.Debug("read flow", "flow", k, "err", err)
		}
		return FlowCounters{}
	}
	fc := FlowCounters{Found: true, Packets: st.Packets, Bytes: st.Bytes, FIN: st.FIN, RST: st.RST}
	if st.LastSeen > 0 {
		fc.LastSeen = wall.Add(st.LastSeen - mono)
	}
	return fc
}

// ConnCounts counts each service's tracked connections, opening and
// spliced, without reading the flow table.
func (e *Engine) ConnCounts() (opening, spliced map[string]int) {
	opening, spliced = map[string]int{}, map[string]int{}
	e.conns.each(false, func(c *conn) {
		c.mu.Lock()
		state, name := c.state, c.svc.Name
		c.mu.Unlock()
		switch state {
		case stateAccepted:
			opening[name]++
		case stateSpliced:
			spliced[name]++
		}
	})
	return opening, spliced
}
