package proxy

import (
	"time"
)

// HandOver prepares an exit that leaves the data path running (the next
// engine takes it over): the data plane answers every service's SYNs with
// cookies from now on (services under cookies `never` excepted), so no new
// handshake depends on this engine's memory, and HandOver waits until the
// handshakes it holds are done: every validated connection spliced or
// failed, every half-open entry completed or expired. It returns when they
// are, or after timeout (a flood's half-open entries never complete), with
// the number of connections still opening and half-open entries left:
// those break if their client's next segment arrives after the exit
// (except cookie handshakes, which the next engine validates). Run and
// Serve must still be running.
func (e *Engine) HandOver(timeout time.Duration) (opening, halfOpen int) {
	e.stopping.Store(true)
	for _, s := range e.set.Load().order {
		s.requestOffload()
	}
	// A wait on the wall clock, not the engine's (tests drive that one).
	deadline := time.Now().Add(timeout)
	for {
		opening, halfOpen = 0, 0
		e.conns.each(true, func(*conn) { opening++ })
		set := e.set.Load()
		for _, s := range set.order {
			halfOpen += s.l.SynQueueLen()
		}
		for _, rs := range set.retiring {
			for _, s := range rs {
				if s.l != nil {
					halfOpen += s.l.SynQueueLen()
				}
			}
		}
		if (opening == 0 && halfOpen == 0) || !time.Now().Before(deadline) {
			return opening, halfOpen
		}
		time.Sleep(20 * time.Millisecond)
	}
}
