package proxy

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/flow"
)

// connState is where a connection is in its life.
type connState uint8

const (
	// stateAccepted: the client's handshake is validated; the connection
	// waits in the accept queue or for the backend's SYN-ACK.
	stateAccepted connState = iota
	// stateSpliced: both flow entries are installed; XDP forwards the data.
	stateSpliced
	// stateDone: removed, or about to be.
	stateDone
)

// heldSegment is client data that arrived before the splice was in place.
type heldSegment struct {
	seq, ack     uint32
	flags        uint8
	window       uint16
	ts           bool // the segment carried timestamps
	tsval, tsecr uint32
	data         []byte
}

// conn is one client connection from its validated ACK until its flows
// expire. Fields after mu are guarded by it.
type conn struct {
	svc    *service
	client flow.Tuple

	mu    sync.Mutex
	state connState
	// queued is set when the backend-leg worker popped the connection off
	// the accept queue, haveClient when the receive loop recorded the
	// client's side; the backend SYN goes out once both are true.
	queued, haveClient bool
	synSent            bool
	inflight           bool // holds one of the service's backend handshake slots
	created            time.Time

	clientISN, ourISN uint32
	opts              flow.SynOptions // client's SYN options, as validated
	mss               uint16          // MSS announced to the client
	wscale            uint8           // window scale announced to the client
	ts                bool            // timestamps on the client leg
	sack              bool            // SACK on the client leg
	ecn               bool            // ECN agreed with the client, requested from the backend
	ourTS0            uint32          // the TSval our SYN-ACK carried (echoed in the ACK)
	clientTSval       uint32          // latest client TSval
	window            uint16          // the client's last window (scaled by opts.WScale)
	clientMAC, ourMAC [6]byte
	clientIfindex     int

	// be is the pool member of the backend leg, picked when the leg
	// opens; tried are the members that refused it before (redispatch).
	be       *member
	tried    []*member
	source   netip.AddrPort // our backend-side address and port
	pool     *portPool      // where source's port goes back
	portWait bool           // waiting for a free source port
	// The backend leg has its own sequence and timestamp spaces, chosen
	// by the engine so that a reused port never confuses the backend:
	// backend-side seq = client seq + seqDelta, TSval = client TSval +
	// tsDelta.
	seqDelta, tsDelta uint32
	sentBytes         uint64    // client payload the engine itself sent to the backend
	deadline          time.Time // backend handshake deadline
	firstSyn          time.Time // the first backend SYN, for the connect time
	nextSyn           time.Time // next backend SYN retransmission
	synTries          int
	twResets          int  // TIME_WAIT ACKs answered with a RST
	failRecorded      bool // the leg's failure is already on be (redispatch)
	held              []heldSegment
	heldBytes         int

	backendISN, backendTS0 uint32
	backendOpts            flow.SynOptions
	splicedAt              time.Time
	lastChallenge          time.Time // last challenge ACK sent for a SYN into it
	// slowEnd is where the client data the engine forwarded after the
	// splice ends (with slowSent): XDP's sequence state does not know it.
	slowEnd  uint32
	slowSent bool

	// PROXY protocol: header is what the backend stream starts with.
	// While headerPending the backend has not acknowledged it: only the
	// client-to-backend flow is installed, the backend's segments come to
	// the engine (which installs toClient, its tracked state from
	// trBackend and what the backend sent since, once one acknowledges
	// the header) and the header is retransmitted at headerNext.
	header        []byte
	headerPending bool
	headerNext    time.Time
	headerTries   int
	toClient      flow.NAT
	trBackend     flow.Track
	backendNxt    uint32 // the backend's next sequence number, from what it sent so far
	// backendFIN: the backend's FIN went to the client through the engine
	// (before its flow was installed), so the flow's state lacks it;
	// backendFinEnd is the FIN's sequence number plus one.
	backendFIN    bool
	backendFinEnd uint32
}

// backendState completes b, the backend direction's state as the data
// plane holds it, with a FIN the engine forwarded before the flow existed.
func (c *conn) backendState(b flow.State) flow.State {
	if c.backendFIN && !b.FIN {
		b.FIN, b.FinEnd = true, c.backendFinEnd
	}
	return b
}

// connShards spreads the tables over independent locks so receive loops
// rarely contend.
const connShards = 32

// legKey is a backend leg as the backend's segments name it: our source
// address and port, and the backend. A source port is unique per backend,
// not per source address.
type legKey struct {
	source, backend netip.AddrPort
}

// connTable indexes connections by client tuple and by backend leg.
type connTable struct {
	seed   maphash.Seed
	shards [connShards]struct {
		mu       sync.Mutex
		byClient map[flow.Tuple]*conn
		bySource map[legKey]*conn
		// opening holds the connections not yet spliced, the only ones
		// the 250 ms backend-timeout scan must visit.
		opening map[*conn]struct{}
	}
	max, n atomic.Int64

	// Counters not tied to a service.
	malformed, stray, full atomic.Uint64
	spliced                atomic.Int64 // connections in stateSpliced now
	expiredBy              map[string]*atomic.Uint64
}

// expiryReasons are the label values of flows_expired_total.
// reclaimed: a closed flow ended early because its source port was needed;
// orphaned: an entry of an earlier process (counted per entry).
var expiryReasons = []string{"idle", "closed", "reset", "evicted", "reused", "reclaimed", "orphaned"}

func (t *connTable) expired(reason string) {
	if n := t.expiredBy[reason]; n != nil {
		n.Add(1)
	}
}

func newConnTable(max int) *connTable {
	t := &connTable{seed: maphash.MakeSeed(), expiredBy: make(map[string]*atomic.Uint64)}
	for _, r := range expiryReasons {
		t.expiredBy[r] = new(atomic.Uint64)
	}
	t.max.Store(int64(max))
	for i := range t.shards {
		t.shards[i].byClient = make(map[flow.Tuple]*conn)
		t.shards[i].bySource = make(map[legKey]*conn)
		t.shards[i].opening = make(map[*conn]struct{})
	}
	return t
}

func (t *connTable) shardOf(ap netip.AddrPort) int {
	b := ap.Addr().As16()
	h := maphash.Bytes(t.seed, b[:]) ^ uint64(ap.Port())*0x9e3779b97f4a7c15
	return int(h % connShards)
}

func (t *connTable) byClient(ft flow.Tuple) *conn {
	s := &t.shards[t.shardOf(ft.Client)]
	s.mu.Lock()
	c := s.byClient[ft]
	s.mu.Unlock()
	return c
}

func (t *connTable) bySource(k legKey) *conn {
	s := &t.shards[t.shardOf(k.source)]
	s.mu.Lock()
	c := s.bySource[k]
	s.mu.Unlock()
	return c
}

// getOrCreate returns the connection of ft, creating it when the table has
// room. created reports a new entry; nil means the table is full.
func (t *connTable) getOrCreate(svc *service, ft flow.Tuple, now time.Time) (c *conn, created bool) {
	s := &t.shards[t.shardOf(ft.Client)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.byClient[ft]; c != nil {
		return c, false
	}
	if t.n.Load() >= t.max.Load() {
		t.full.Add(1)
		return nil, false
	}
	t.n.Add(1)
	svc.live.Add(1)
	c = &conn{svc: svc, client: ft, created: now}
	s.byClient[ft] = c
	s.opening[c] = struct{}{}
	return c, true
}

// atCapacity reports whether the table holds its maximum: new connections are
// refused (with a RST) until some end.
func (t *connTable) atCapacity() bool { return t.n.Load() >= t.max.Load() }

// setSource indexes c by its backend leg.
func (t *connTable) setSource(c *conn, k legKey) {
	s := &t.shards[t.shardOf(k.source)]
	s.mu.Lock()
	s.bySource[k] = c
	s.mu.Unlock()
}

// remove drops c from both indexes.
func (t *connTable) remove(c *conn, leg legKey) {
	s := &t.shards[t.shardOf(c.client.Client)]
	s.mu.Lock()
	if s.byClient[c.client] == c {
		delete(s.byClient, c.client)
		t.n.Add(-1)
		c.svc.live.Add(-1)
	}
	delete(s.opening, c)
	s.mu.Unlock()
	if leg.source.IsValid() {
		s := &t.shards[t.shardOf(leg.source)]
		s.mu.Lock()
		if s.bySource[leg] == c {
			delete(s.bySource, leg)
		}
		s.mu.Unlock()
	}
}

// removeSource drops c's backend-leg index entry (its leg moves to
// another backend).
func (t *connTable) removeSource(c *conn, leg legKey) {
	s := &t.shards[t.shardOf(leg.source)]
	s.mu.Lock()
	if s.bySource[leg] == c {
		delete(s.bySource, leg)
	}
	s.mu.Unlock()
}

// opened takes c off the opening set once it is spliced.
func (t *connTable) opened(c *conn) {
	s := &t.shards[t.shardOf(c.client.Client)]
	s.mu.Lock()
	delete(s.opening, c)
	s.mu.Unlock()
}

// each calls fn for every connection (or, with openingOnly, every one not
// yet spliced), shard by shard, without holding a shard lock while fn runs.
func (t *connTable) each(openingOnly bool, fn func(*conn)) {
	for i := range t.shards {
		t.eachIn(i, openingOnly, fn)
	}
}

// eachIn is each for one shard; it returns how many connections fn saw.
func (t *connTable) eachIn(shard int, openingOnly bool, fn func(*conn)) int {
	s := &t.shards[shard]
	s.mu.Lock()
	var buf []*conn
	if openingOnly {
		buf = make([]*conn, 0, len(s.opening))
		for c := range s.opening {
			buf = append(buf, c)
		}
	} else {
		buf = make([]*conn, 0, len(s.byClient))
		for _, c := range s.byClient {
			buf = append(buf, c)
		}
	}
	s.mu.Unlock()
	for _, c := range buf {
		fn(c)
	}
	return len(buf)
}
