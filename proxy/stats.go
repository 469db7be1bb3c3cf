package proxy

import (
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/queue"
)

// rejectReasons are every label value of ack_rejected_total: the cookie
// reasons, the queue's, no_entry for an ACK refused a cookie check, and
// recently_reset for a late segment of a connection the engine reset (see
// recentResets).
var rejectReasons = func() []string {
	r := []string{"no_entry", rejectRecentlyReset, queue.ReasonBadAck.String(), queue.ReasonBadSeq.String(), queue.ReasonAcceptQueueFull.String()}
	for _, c := range cookie.Reasons() {
		if c != cookie.ReasonOK {
			r = append(r, c.String())
		}
	}
	return r
}()

// rejectRecentlyReset is the ack_rejected_total reason of a late segment
// of a connection the engine reset.
const rejectRecentlyReset = "recently_reset"

// backendReasons are every label value of backend_failures_total.
// no_backend: the pool had no usable member; reset: the backend reset the
// leg before it acknowledged the PROXY header.
var backendReasons = []string{"refused", "timeout", "no_port", "conn_table_full", "flow_table_full", "flow_install", "stale", "replaced", "no_backend", "reset"}

// ecnResults are the label values of ecn_total: what became of a client's
// ECN request, decided at the splice.
var ecnResults = []string{ecnNegotiated, ecnNotOffered, ecnBackendRefused}

const (
	ecnNegotiated     = "negotiated"      // on both legs
	ecnNotOffered     = "not_offered"     // the backend is not known to do ECN: refused to the client
	ecnBackendRefused = "backend_refused" // agreed with the client, then refused by the backend's SYN-ACK
)

// mssLegs are the label values of mss_clamped_total.
var mssLegs = []string{legClient, legBackend}

const (
	legClient  = "client"  // a SYN-ACK announced less than the client and backend allow
	legBackend = "backend" // a backend SYN carried less than the client's MSS
)

// serviceCounters are the engine's own counters of a service; the queue
// keeps the listen-path ones. Label sets are fixed at start, so the packet
// path only does atomic adds on preallocated counters.
type serviceCounters struct {
	synAckQueued, synAckCookie, synAckResent atomic.Uint64
	ackQueue, ackCookie, ackPeerCookie       atomic.Uint64
	spliced, slowPath, sendErrors            atomic.Uint64
	synDropped                               atomic.Uint64 // SYNs into a live connection
	twResets                                 atomic.Uint64 // backend TIME_WAIT cleared for a reused port
	synAckRepeats                            atomic.Uint64 // backend SYN-ACKs repeated into spliced legs, acked again
	handedOff                                atomic.Uint64 // unknown segments passed to peer gateways
	challengeSent, challengeLimited          atomic.Uint64 // challenge ACKs for SYNs into live connections
	rstInWindow                              atomic.Uint64 // in-window, inexact RSTs forwarded for their challenge ACK
	resetsSent                               atomic.Uint64 // RSTs to the ends of connections syngate gave up
	synData                                  atomic.Uint64 // SYNs carrying data (TCP Fast Open)
	ecnBy                                    map[string]*atomic.Uint64
	mssClampedBy                             map[string]*atomic.Uint64
	// Connections that found no free source port: portWaits got one
	// later, portFails gave up at the connect timeout.
	portWaits, portFails atomic.Uint64
	headerRetrans        atomic.Uint64 // PROXY headers sent again
	redispatched         atomic.Uint64 // legs opened again toward another backend
	rejectedBy           map[string]*atomic.Uint64
	failedBy             map[string]*atomic.Uint64
	// lastFailure is the latest backend-leg failure, for `syngate status`.
	lastFailure atomic.Pointer[BackendFailure]
}

// BackendFailure is one failed backend leg: when, and the reason label of
// backend_failures_total.
type BackendFailure struct {
	At     time.Time
	Reason string
}

func (c *serviceCounters) init() {
	c.rejectedBy = make(map[string]*atomic.Uint64, len(rejectReasons))
	for _, r := range rejectReasons {
		c.rejectedBy[r] = new(atomic.Uint64)
	}
	c.failedBy = make(map[string]*atomic.Uint64, len(backendReasons))
	for _, r := range backendReasons {
		c.failedBy[r] = new(atomic.Uint64)
	}
	c.ecnBy = make(map[string]*atomic.Uint64, len(ecnResults))
	for _, r := range ecnResults {
		c.ecnBy[r] = new(atomic.Uint64)
	}
	c.mssClampedBy = make(map[string]*atomic.Uint64, len(mssLegs))
	for _, r := range mssLegs {
		c.mssClampedBy[r] = new(atomic.Uint64)
	}
}

func (c *serviceCounters) ecn(result string) { c.ecnBy[result].Add(1) }

func (c *serviceCounters) mssClamped(leg string) { c.mssClampedBy[leg].Add(1) }

func (c *serviceCounters) rejected(reason string) {
	if n := c.rejectedBy[reason]; n != nil {
		n.Add(1)
	}
}

func (c *serviceCounters) backendFailure(reason string) {
	if n := c.failedBy[reason]; n != nil {
		n.Add(1)
	}
	c.lastFailure.Store(&BackendFailure{At: time.Now(), Reason: reason})
}

func snapshot(m map[string]*atomic.Uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v.Load()
	}
	return out
}

// ServiceStats implements metrics.ServiceSource.
func (s *service) ServiceStats() metrics.ServiceStats {
	q := s.l.Stats()
	return metrics.ServiceStats{
		Name:                s.Name,
		SynReceived:         q.SynReceived,
		SynAckQueued:        s.st.synAckQueued.Load(),
		SynAckCookie:        s.st.synAckCookie.Load(),
		SynAckResent:        s.st.synAckResent.Load(),
		SynAckRetrans:       q.Retransmits,
		HalfOpenTimeout:     q.Timeouts,
		SynQueueFullCookie:  q.CookiesOverflow,
		SynQueueFullDrop:    q.SynDropsQueueFull,
		SynDropAcceptFull:   q.SynDropsAcceptFull,
		SynDropEstablished:  s.st.synDropped.Load(),
		AckQueue:            s.st.ackQueue.Load(),
		AckCookie:           s.st.ackCookie.Load(),
		AckPeerCookie:       s.st.ackPeerCookie.Load(),
		AckRejected:         snapshot(s.st.rejectedBy),
		AcceptOverflowDrop:  q.AcceptOverflowDrops,
		AcceptOverflowReset: q.AcceptOverflowResets,
		Spliced:             s.st.spliced.Load(),
		SlowPath:            s.st.slowPath.Load(),
		BackendTimeWait:     s.st.twResets.Load(),
		BackendSynAckRepeat: s.st.synAckRepeats.Load(),
		HandedOff:           s.st.handedOff.Load(),
		ChallengeACKSent:    s.st.challengeSent.Load(),
		ChallengeACKLimited: s.st.challengeLimited.Load(),
		RSTInWindow:         s.st.rstInWindow.Load(),
		ResetsSent:          s.st.resetsSent.Load(),
		SourcePortWaited:    s.st.portWaits.Load(),
		SourcePortFailed:    s.st.portFails.Load(),
		BackendFailures:     snapshot(s.st.failedBy),
		SynData:             s.st.synData.Load(),
		ECN:                 snapshot(s.st.ecnBy),
		MSSClamped:          snapshot(s.st.mssClampedBy),
		HalfOpen:            q.SynQueueLen,
		HalfOpenLimit:       s.Limits.MaxSynBacklog,
		Accept:              q.AcceptQueueLen,
		AcceptLimit:         s.l.AcceptQueueCap(),
		NoBackend:           s.noBackend.Load(),
		Redispatched:        s.st.redispatched.Load(),
		HeaderRetransmits:   s.st.headerRetrans.Load(),
		Backends:            s.backendStats(),
		BackendConnect:      s.connectTime.Snapshot(),
	}
}

// EngineStats are the engine's counters that belong to no service.
type EngineStats struct {
	Conns     int               // connections tracked: opening and spliced
	Spliced   int               // of Conns, those in the XDP flow table
	Malformed uint64            // frames the engine could not parse
	Stray     uint64            // segments for no service and no connection
	TableFull uint64            // connections refused because MaxConns were tracked
	Expired   map[string]uint64 // spliced flows removed, by reason
}

// Stats returns the engine-wide counters.
func (e *Engine) Stats() EngineStats {
	return EngineStats{
		Conns:     int(e.conns.n.Load()),
		Spliced:   int(e.conns.spliced.Load()),
		Malformed: e.conns.malformed.Load(),
		Stray:     e.conns.stray.Load(),
		TableFull: e.conns.full.Load(),
		Expired:   snapshot(e.conns.expiredBy),
	}
}
