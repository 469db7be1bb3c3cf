package queue

import (
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// SYN is what the listener keeps of a client's SYN.
type SYN struct {
	Tuple   flow.Tuple
	ISN     uint32          // the client's initial sequence number
	Options flow.SynOptions // the client's options, replayed to the backend later
	MSS     uint16          // the MSS our SYN-ACK announces
}

// SynAction is what the caller does with a SYN.
type SynAction int

const (
	// SynDrop: send nothing; SynDecision.Reason says why.
	SynDrop SynAction = iota
	// SynQueued: a half-open entry now exists; send a SYN-ACK with
	// SynDecision.OurISN.
	SynQueued
	// SynResend: the SYN is a retransmission of a queued one; send the same
	// SYN-ACK again (SynDecision.OurISN and MSS). Nothing was added.
	SynResend
	// SynCookie: no state was kept; send a SYN-ACK whose ISN is a cookie.
	SynCookie
)

var synActionNames = [...]string{SynDrop: "drop", SynQueued: "queued", SynResend: "resend", SynCookie: "cookie"}

// String names the action for logs.
func (a SynAction) String() string { return name(synActionNames[:], int(a), "SynAction") }

// Reason explains a drop, reset or cookie.
type Reason int

const (
	// ReasonNone: nothing went wrong.
	ReasonNone Reason = iota
	// ReasonAcceptQueueFull: the accept queue is full (Linux ListenOverflows).
	ReasonAcceptQueueFull
	// ReasonSynQueueFull: the half-open queue is full.
	ReasonSynQueueFull
	// ReasonCookiesAlways: the service answers every SYN with a cookie.
	ReasonCookiesAlways
	// ReasonRateLimited: a retransmitted SYN came within
	// Config.ResendInterval of the last SYN-ACK resent for it.
	ReasonRateLimited
	// ReasonBadAck: the ACK number is not our ISN + 1; Linux answers with RST.
	ReasonBadAck
	// ReasonBadSeq: the sequence number is not the client's ISN + 1.
	ReasonBadSeq
)

var reasonNames = [...]string{
	ReasonNone:            "none",
	ReasonAcceptQueueFull: "accept queue full",
	ReasonSynQueueFull:    "syn queue full",
	ReasonCookiesAlways:   "cookies always",
	ReasonRateLimited:     "rate limited",
	ReasonBadAck:          "bad ack number",
	ReasonBadSeq:          "bad sequence number",
}

// String names the reason for logs.
func (r Reason) String() string { return name(reasonNames[:], int(r), "Reason") }

// SynDecision is the listener's answer to a SYN.
type SynDecision struct {
	// Action is what to send.
	Action SynAction
	// OurISN is the SYN-ACK's sequence number for SynQueued and SynResend.
	OurISN uint32
	// MSS is the MSS to announce for SynQueued and SynResend (the one
	// stored with the entry, so a resent SYN-ACK matches the first).
	MSS uint16
	// Reason says why a SYN was dropped or got a cookie.
	Reason Reason
}

// AckAction is what the caller does with a handshake ACK.
type AckAction int

const (
	// AckNoEntry: no half-open entry for the tuple. Check the ACK as a
	// cookie only if AckDecision.CookieCheckAllowed; otherwise drop it.
	AckNoEntry AckAction = iota
	// AckQueued: the ACK completed a queued handshake and the connection
	// is now in the accept queue (AckDecision.Conn is a copy).
	AckQueued
	// AckDrop: ignore the segment. With ReasonAcceptQueueFull the half-open
	// entry stays, so the client's next segment is validated again.
	AckDrop
	// AckReset: answer with a RST (ReasonBadAck, or ReasonAcceptQueueFull
	// under spec.OverflowReset, which also removed the entry).
	AckReset
)

var ackActionNames = [...]string{AckNoEntry: "no entry", AckQueued: "queued", AckDrop: "drop", AckReset: "reset"}

// String names the action for logs.
func (a AckAction) String() string { return name(ackActionNames[:], int(a), "AckAction") }

// AckDecision is the listener's answer to a handshake ACK.
type AckDecision struct {
	// Action is what to do with the segment.
	Action AckAction
	// Reason says why an ACK was dropped or reset.
	Reason Reason
	// CookieCheckAllowed is set with AckNoEntry when the service sent
	// cookies recently: always under spec.CookiesAlways, under spec.CookiesAuto for two
	// cookie ticks after the half-open queue last overflowed, never under
	// spec.CookiesNever. Checking every stray ACK would let blind guessing in.
	// Under spec.CookiesAuto with the gate closed it is also set, with
	// PeerCookie, for up to Config.PeerCookieChecks ACKs a second.
	CookieCheckAllowed bool
	// PeerCookie is set with CookieCheckAllowed when the local gate is
	// closed: a valid cookie was minted by a peer gateway sharing the
	// secret (an ECMP change moved the handshake's ACK here).
	PeerCookie bool
	// Conn is the queued connection for AckQueued.
	Conn Conn
}

// Timeout is one fired half-open timer, passed to Expire's callback.
type Timeout struct {
	// Tuple, ClientISN, OurISN, Options and MSS are what the SYN-ACK is
	// rebuilt from: the same as the first one.
	Tuple     flow.Tuple
	ClientISN uint32
	OurISN    uint32
	Options   flow.SynOptions
	MSS       uint16
	// Attempt numbers the retransmission (1 for the first); for a dropped
	// entry it is how many retransmissions were sent.
	Attempt int
	// Dropped means the entry ran out of retransmissions and was removed:
	// send nothing.
	Dropped bool
}

// Listener is the listen path of one service: its half-open queue, its
// accept queue, its cookie gate and its counters. Create it with
// NewListener; all methods are safe for concurrent use.
type Listener struct {
	cookies        spec.CookiePolicy
	retries        int
	resendInterval int64 // ns; negative disables
	cookieWindow   int64 // ns an ACK may be checked as a cookie after an overflow
	synMax         int64
	peerChecks     int64 // per second, at the closed gate; <0: none

	key        hashKey
	shards     []shard
	shardShift uint

	// The counters every core writes get cache lines of their own, away
	// from the read-mostly fields above.
	_            [64]byte
	synLen       atomic.Int64
	_            [56]byte
	lastOverflow atomic.Int64 // listener clock of the last queue overflow, or noTime
	_            [56]byte
	// The peer-cookie budget: checks counted in the current second.
	peerSecond atomic.Int64
	peerCount  atomic.Int64
	_          [48]byte

	accept acceptQueue

	epochSet atomic.Bool
	epochMu  sync.Mutex
	epoch    time.Time

	expireMu  sync.Mutex
	expireBuf []Timeout
}

// NewListener validates cfg and allocates all the memory the listener
// will ever use.
func NewListener(cfg Config) (*Listener, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("new listener: %w", err)
	}
	l := &Listener{
		cookies:        c.Cookies,
		retries:        c.SynAckRetries,
		resendInterval: int64(c.ResendInterval),
		cookieWindow:   int64(2 * c.CookieTick),
		synMax:         int64(c.MaxSynBacklog),
		peerChecks:     int64(c.PeerCookieChecks),
		key:            newHashKey(),
		shards:         make([]shard, c.Shards),
		shardShift:     uint(64 - bits.TrailingZeros(uint(c.Shards))),
	}
	l.lastOverflow.Store(noTime)
	perShard := 0
	if c.Cookies != spec.CookiesAlways {
		perShard = c.MaxSynBacklog
		if c.Shards > 1 {
			// Room for a fair share plus headroom of many standard
			// deviations of the keyed hash's spread; the exact total is
			// enforced by synLen.
			fair := (c.MaxSynBacklog + c.Shards - 1) / c.Shards
			perShard = min(fair+fair/2+16, c.MaxSynBacklog)
		}
	}
	for i := range l.shards {
		l.shards[i].init(perShard)
	}
	l.expireBuf = make([]Timeout, 0, perShard)
	l.accept.init(min(c.Backlog, c.Somaxconn), c.Overflow)
	return l, nil
}

// now converts a caller's time to nanoseconds since the first time the
// listener saw, which keeps the monotonic reading when now has one.
func (l *Listener) now(now time.Time) int64 {
	if !l.epochSet.Load() {
		l.epochMu.Lock()
		if !l.epochSet.Load() {
			l.epoch = now
			l.epochSet.Store(true)
		}
		l.epochMu.Unlock()
	}
	d := now.Sub(l.epoch)
	if d < 0 {
		// A receive queue's clock read a hair before another's.
		return 0
	}
	return int64(d)
}

func (l *Listener) shard(h uint64) *shard {
	return &l.shards[h>>l.shardShift&uint64(len(l.shards)-1)]
}

// reserve counts one more half-open entry if the queue has room.
func (l *Listener) reserve() bool {
	for {
		n := l.synLen.Load()
		if n >= l.synMax {
			return false
		}
		if l.synLen.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// OnSYN decides what to do with a SYN, checking in Linux's order: a full
// accept queue drops it (even with cookies); spec.CookiesAlways answers with a
// cookie; a retransmission of a queued SYN (same ISN) resends its SYN-ACK;
// a SYN with a new ISN replaces the entry; otherwise it is queued if there
// is room, else answered with a cookie (spec.CookiesAuto, which also opens the
// ACK cookie gate) or dropped (spec.CookiesNever).
//
// newISN (not nil) is called, once, only when an entry is created or
// replaced. Entries are keyed by address and port; IPv6 zones, which no SYN
// carries, are not kept. The queue holds at most Config.MaxSynBacklog
// entries; with several shards one shard can fill a little before the whole
// queue does, which counts as an overflow like a full queue.
func (l *Listener) OnSYN(s SYN, now time.Time, newISN func() uint32) SynDecision {
	k := makeKey(s.Tuple)
	h := l.key.sum(&k)
	sh := l.shard(h)
	sh.stats.synReceived.Add(1)
	if l.accept.full() {
		sh.stats.synAcceptFullDrops.Add(1)
		return SynDecision{Action: SynDrop, Reason: ReasonAcceptQueueFull}
	}
	if l.cookies == spec.CookiesAlways {
		sh.stats.cookiesSent.Add(1)
		return SynDecision{Action: SynCookie, Reason: ReasonCookiesAlways}
	}
	t := l.now(now)

	sh.mu.Lock()
	pos, i := sh.lookup(h, &k)
	if i != nilIdx {
		e := &sh.entries[i]
		if e.clientISN == s.ISN {
			if l.resendInterval >= 0 && e.lastResend != noTime && t-e.lastResend < l.resendInterval {
				sh.mu.Unlock()
				sh.stats.synResendLimited.Add(1)
				return SynDecision{Action: SynDrop, Reason: ReasonRateLimited}
			}
			e.lastResend = t
			d := SynDecision{Action: SynResend, OurISN: e.ourISN, MSS: e.mss}
			sh.mu.Unlock()
			sh.stats.synResent.Add(1)
			return d
		}
		// The client gave up on the old handshake and started a new one.
		sh.unlink(i)
		d := l.fill(sh, i, s, t, newISN)
		sh.mu.Unlock()
		sh.stats.synReplaced.Add(1)
		sh.stats.synQueued.Add(1)
		return d
	}
	if sh.free != nilIdx && l.reserve() {
		i = sh.alloc(pos, h, &k)
		d := l.fill(sh, i, s, t, newISN)
		sh.mu.Unlock()
		sh.stats.synQueued.Add(1)
		return d
	}
	sh.mu.Unlock()

	if l.cookies == spec.CookiesAuto {
		l.noteOverflow(t)
		sh.stats.cookiesSent.Add(1)
		sh.stats.cookiesOverflow.Add(1)
		return SynDecision{Action: SynCookie, Reason: ReasonSynQueueFull}
	}
	sh.stats.synQueueFullDrops.Add(1)
	return SynDecision{Action: SynDrop, Reason: ReasonSynQueueFull}
}

// fill (re)initialises entry i for s and starts its retransmission timer.
func (l *Listener) fill(sh *shard, i int32, s SYN, t int64, newISN func() uint32) SynDecision {
	e := &sh.entries[i]
	e.firstSeen = t
	e.opts = s.Options
	e.clientISN = s.ISN
	e.ourISN = newISN()
	e.mss = s.MSS
	e.attempts = 0
	e.lastResend = noTime
	e.deadline = t + int64(InitialRTO)
	sh.schedule(i)
	return SynDecision{Action: SynQueued, OurISN: e.ourISN, MSS: e.mss}
}

// noteOverflow stamps the cookie gate. Like Linux it rewrites the stamp at
// most once a second, so a flood does not bounce the cache line around.
func (l *Listener) noteOverflow(t int64) {
	last := l.lastOverflow.Load()
	if last == noTime || t-last >= int64(time.Second) {
		l.lastOverflow.Store(t)
	}
}

func (l *Listener) cookieCheckAllowed(t int64) bool {
	switch l.cookies {
	case spec.CookiesAlways:
		return true
	case spec.CookiesAuto:
		last := l.lastOverflow.Load()
		return last != noTime && t-last <= l.cookieWindow
	}
	return false
}

// OnACK decides what to do with the ACK that should complete a handshake
// (seq and ack are the segment's sequence and acknowledgment numbers). When
// it matches a half-open entry (ack == our ISN + 1, seq == client ISN + 1)
// the connection moves to the accept queue with data (the ACK's payload,
// owned by the listener's consumers from then on) unless that queue is
// full, in which case Config.Overflow decides between AckDrop (entry kept)
// and AckReset (entry removed).
func (l *Listener) OnACK(t flow.Tuple, seq, ack uint32, data []byte, now time.Time) AckDecision {
	k := makeKey(t)
	h := l.key.sum(&k)
	sh := l.shard(h)
	tm := l.now(now)
	if l.cookies != spec.CookiesAlways {
		sh.mu.Lock()
		pos, i := sh.lookup(h, &k)
		if i != nilIdx {
			d := l.matched(sh, pos, i, seq, ack, data)
			sh.mu.Unlock()
			return d
		}
		sh.mu.Unlock()
	}
	sh.stats.ackUnmatched.Add(1)
	if l.cookieCheckAllowed(tm) {
		return AckDecision{Action: AckNoEntry, CookieCheckAllowed: true}
	}
	if l.peerCheckAllowed(tm) {
		sh.stats.ackPeerChecks.Add(1)
		return AckDecision{Action: AckNoEntry, CookieCheckAllowed: true, PeerCookie: true}
	}
	sh.stats.ackCookieDenied.Add(1)
	return AckDecision{Action: AckNoEntry}
}

// peerCheckAllowed spends one of this second's peer-cookie checks. The
// budget is per wall second of the listener clock; two receive queues
// crossing a second together may spend a few extra, which the bound
// tolerates (it is a rate, not a secret).
func (l *Listener) peerCheckAllowed(t int64) bool {
	if l.cookies != spec.CookiesAuto || l.peerChecks == 0 {
		return false
	}
	sec := t / int64(time.Second)
	if cur := l.peerSecond.Load(); cur != sec && l.peerSecond.CompareAndSwap(cur, sec) {
		l.peerCount.Store(0)
	}
	return l.peerCount.Add(1) <= l.peerChecks
}

// matched handles an ACK for entry i; the shard lock is held.
func (l *Listener) matched(sh *shard, pos uint64, i int32, seq, ack uint32, data []byte) AckDecision {
	e := &sh.entries[i]
	if ack != e.ourISN+1 {
		sh.stats.ackBadAck.Add(1)
		return AckDecision{Action: AckReset, Reason: ReasonBadAck}
	}
	if seq != e.clientISN+1 {
		sh.stats.ackBadSeq.Add(1)
		return AckDecision{Action: AckDrop, Reason: ReasonBadSeq}
	}
	sh.stats.ackMatched.Add(1)
	c := Conn{
		Tuple:     e.key.tuple(),
		ClientISN: e.clientISN,
		OurISN:    e.ourISN,
		Options:   e.opts,
		MSS:       e.mss,
		FirstSeen: l.epoch.Add(time.Duration(e.firstSeen)),
		Data:      data,
	}
	switch l.accept.push(&c) {
	case AcceptQueued:
		sh.remove(pos, i)
		l.synLen.Add(-1)
		return AckDecision{Action: AckQueued, Conn: c}
	case AcceptReset:
		sh.remove(pos, i)
		l.synLen.Add(-1)
		return AckDecision{Action: AckReset, Reason: ReasonAcceptQueueFull}
	default:
		// The entry stays and keeps retransmitting, as in Linux.
		return AckDecision{Action: AckDrop, Reason: ReasonAcceptQueueFull}
	}
}

// Accept queues a connection validated outside the half-open queue (a SYN
// cookie). A zero c.FirstSeen is set to now.
func (l *Listener) Accept(c Conn, now time.Time) AcceptResult {
	if c.FirstSeen.IsZero() {
		c.FirstSeen = now
	}
	return l.accept.push(&c)
}

// Pop takes the oldest connection off the accept queue, if any.
func (l *Listener) Pop() (Conn, bool) { return l.accept.pop() }

// Ready returns a channel that receives after a connection is queued. One
// signal may stand for several connections, so a consumer pops until Pop
// reports empty before waiting again; Wait does exactly that.
func (l *Listener) Ready() <-chan struct{} { return l.accept.ready }

// Expire fires the half-open timers due at now: fn gets every SYN-ACK to
// retransmit and every entry dropped after its last retransmission. Call it
// about once a second (the wheel has one-second slots; an entry is never
// handled early, and late by at most the gap between calls). fn runs
// without shard locks held and must not call Expire; it may be nil.
func (l *Listener) Expire(now time.Time, fn func(Timeout)) (retransmits, dropped int) {
	t := l.now(now)
	l.expireMu.Lock()
	defer l.expireMu.Unlock()
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		out, removed := sh.expire(t, l.retries, l.expireBuf[:0])
		sh.mu.Unlock()
		l.synLen.Add(int64(-removed))
		sh.stats.timeouts.Add(uint64(removed))
		sh.stats.retransmits.Add(uint64(len(out) - removed))
		retransmits += len(out) - removed
		dropped += removed
		if fn != nil {
			for j := range out {
				fn(out[j])
			}
		}
	}
	return retransmits, dropped
}

// SynQueueLen is the number of half-open entries.
func (l *Listener) SynQueueLen() int { return int(l.synLen.Load()) }

// AcceptQueueLen is the number of connections waiting in the accept queue.
func (l *Listener) AcceptQueueLen() int { return int(l.accept.len.Load()) }

// AcceptQueueCap is min(Backlog, Somaxconn).
func (l *Listener) AcceptQueueCap() int { return len(l.accept.buf) }

func name(names []string, i int, typ string) string {
	if i < 0 || i >= len(names) {
		return fmt.Sprintf("%s(%d)", typ, i)
	}
	return names[i]
}

// CookiesSentElsewhere tells the listener that SYNs of its service are being
// answered with cookies outside OnSYN (by the XDP program), so the ACK
// cookie gate stays open as if the queue had just overflowed. Call it at
// least once a second while that lasts. Under spec.CookiesNever it does nothing:
// such a service must not be answered with cookies at all.
func (l *Listener) CookiesSentElsewhere(now time.Time) {
	if l.cookies == spec.CookiesNever {
		return
	}
	l.noteOverflow(l.now(now))
}

// SynQueueCap is the half-open queue's bound (Config.MaxSynBacklog).
func (l *Listener) SynQueueCap() int { return int(l.synMax) }
