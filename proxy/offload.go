package proxy

import (
	"net/netip"
	"time"

	"github.com/syngate/syngate/queue"
)

// CookieOffload lets the data plane answer a service's SYNs with cookies
// itself (XDP_TX), minted with the same keys, so that a flood no longer has
// to cross AF_XDP. The engine still validates the ACKs. *bpf.Dataplane does
// it through an adapter in the gateway.
type CookieOffload interface {
	// OffloadCookies turns the data plane's cookie answers for s on or off,
	// with what its SYN-ACKs must announce and the window they offer.
	OffloadCookies(s Service, on bool, o Offer, window uint16) error
}

// Offload policy, per service:
//   - cookies always: on from the start, for good;
//   - cookies auto: on when the half-open queue overflows (the receive loop
//     asks, Run acts), off again once the queue has drained below
//     offloadOffAt of its bound: with the data plane answering, no new SYN
//     reaches the queue, so it only drains, as entries complete or time out;
//   - cookies never: never.
const offloadOffAt = 0.5

// requestOffload asks Run to turn the offload on for s; the receive loop
// never makes the syscall itself.
func (s *service) requestOffload() {
	if !s.offloaded.Load() && s.wantOffload.CompareAndSwap(false, true) {
		select {
		case s.offloadReqs <- s:
		default: // cannot happen: one slot per service; Run polls anyway
		}
	}
}

// manageOffload applies the policy once; Run calls it every second and
// whenever a receive loop asked.
func (e *Engine) manageOffload(s *service, now time.Time) {
	if e.cfg.Offload == nil || s.Queue.Cookies == queue.CookiesNever {
		return
	}
	on := s.offloaded.Load()
	want := on
	switch {
	case s.Queue.Cookies == queue.CookiesAlways, e.stopping.Load():
		want = true
	case s.wantOffload.Swap(false):
		want = true
	case on && float64(s.l.SynQueueLen()) < offloadOffAt*float64(s.l.SynQueueCap()):
		want = false
	}
	if !s.hasBackend() {
		// SYN-ACKs minted in XDP would only lead to a reset after the
		// ACK: SYNs go to the engine, which applies on_no_backend.
		want = false
	}
	o := s.offer.Load()
	if want != on || (want && (s.offloadedOffer == nil || *o != *s.offloadedOffer)) {
		if err := e.cfg.Offload.OffloadCookies(s.Service, want, *o, e.window()); err != nil {
			e.log.Warn("cookie offload", "service", s.Name, "on", want, "err", err)
			return
		}
		s.offloaded.Store(want)
		s.offloadedOffer = o
		e.log.Info("cookie offload", "service", s.Name, "on", want)
	}
	if want {
		s.l.CookiesSentElsewhere(now)
	}
}

// window is what SYN-ACKs offer: what the engine holds per connection
// before the splice.
func (e *Engine) window() uint16 { return uint16(min(e.cfg.MaxPending, 65535)) }

// OfferAt returns what the SYN-ACKs of the service listening at listen
// offer now and the window they announce: what the data plane's standby
// cookies must announce too.
func (e *Engine) OfferAt(listen netip.AddrPort) (Offer, uint16, bool) {
	s := e.set.Load().services[listen]
	if s == nil {
		return Offer{}, 0, false
	}
	return *s.offer.Load(), e.window(), true
}
