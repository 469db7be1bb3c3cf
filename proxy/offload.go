package proxy

import (
	"time"

	"github.com/syngate/syngate/spec"
)

// Cookie offload: the data path answers a service's SYNs with cookies
// itself (XDP_TX), minted with the same keys, so that a flood no longer has
// to cross AF_XDP. The engine still validates the ACKs. It is a flag of the
// service's data-path entry (spec.Entry.Offload), written by syncEntry.
//
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

// manageOffload applies the policy once and brings the service's entry
// in the data path up to date (its offer follows the probes); Run calls it
// every second and whenever a receive loop asked.
func (e *Engine) manageOffload(s *service, now time.Time) {
	on := s.offloaded.Load()
	want := on
	switch {
	case s.Cookies == spec.CookiesNever:
		want = false
	case s.Cookies == spec.CookiesAlways, e.stopping.Load():
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
	s.offloaded.Store(want)
	if err := e.syncEntry(s); err != nil {
		s.offloaded.Store(on)
		e.log.Warn("cookie offload: write the service's entry", "service", s.Name, "on", want, "err", err)
		return
	}
	if want != on {
		e.log.Info("cookie offload", "service", s.Name, "on", want)
	}
	if want {
		s.l.CookiesSentElsewhere(now)
	}
}

// window is what SYN-ACKs offer (spec.Offer.Window): what the engine holds
// per connection before the splice.
func (e *Engine) window() uint16 { return uint16(min(e.cfg.MaxPending, 65535)) }
