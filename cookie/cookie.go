package cookie

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/flow"
)

// Defaults for the zero Config fields.
const (
	// DefaultTick matches Linux's 64-second syncookie counter.
	DefaultTick = 64 * time.Second
	// DefaultMaxAge accepts cookies from the current or previous tick.
	DefaultMaxAge = 1
	// MaxMaxAge is the largest MaxAge the 3-bit tick field can tell apart
	// from a tick in the future (age 7 reads as "one tick ahead").
	MaxMaxAge = 6
)

// ErrConfig means a Config field is out of range.
var ErrConfig = errors.New("invalid cookie config")

// Config tunes a Jar. The zero value gives Linux-like behaviour.
type Config struct {
	// Tick is the granularity of the cookie clock; zero means DefaultTick.
	// Gateways sharing a secret must use the same Tick (and clocks within a
	// small fraction of it: a cookie minted by a gateway whose clock already
	// crossed a tick boundary reads as ReasonFuture on one that has not).
	Tick time.Duration
	// MaxAge is how many ticks old a cookie may be (1..MaxMaxAge); zero
	// means DefaultMaxAge. A cookie lives between MaxAge and MaxAge+1 ticks.
	MaxAge int
	// Rotation is the key epoch length; zero means (MaxAge+1)*Tick, so that
	// key rotation never ends a cookie before its tick does. Keys of the
	// current and previous epoch are accepted, so a cookie lives at least
	// min(MaxAge*Tick, Rotation). Must match across gateways sharing a secret.
	Rotation time.Duration
}

// MSS tables: Linux's msstab and msstab6 style values, chosen to cover the
// common path MTUs (minimum, tunnels/VPN, PPPoE-ish, Ethernet; jumbo for v6).
var (
	mssTable4 = [4]uint16{536, 1300, 1440, 1460}
	mssTable6 = [4]uint16{1220, 1420, 1440, 8940}
)

// ISN layout, most significant bit first (see the package doc).
const (
	tickBits = 3
	mssBits  = 2
	authBits = 19 // SipHash bits over tuple, client ISN, tick, MSS
	tagBits  = 8  // per-cookie MAC of the timestamp option bits

	tickShift = 32 - tickBits
	mssShift  = tickShift - mssBits
	authShift = tagBits
	tickMask  = 1<<tickBits - 1
	mssMask   = 1<<mssBits - 1
	authMask  = 1<<authBits - 1
	tagMask   = 1<<tagBits - 1

	// futureAge is the tick-field distance read as "one tick ahead".
	futureAge = tickMask
)

// TSval option bits (low 6 bits), as in Linux's cookie_init_timestamp.
const (
	tsOptBits   = 6
	tsOptMask   = 1<<tsOptBits - 1
	tsWScale    = 0x0f // 0xf: no window scaling
	tsSACK      = 1 << 4
	tsECN       = 1 << 5
	tsPresent   = 1 << tsOptBits // tag input marker: the SYN had timestamps
	tagWordBits = 22             // multiply-add-shift word size (>= 7+tagBits-1)
	tagWordMask = 1<<tagWordBits - 1
)

// Reason says why Check accepted or rejected an ACK. Its String form is a
// stable snake_case word meant as a Prometheus label value.
type Reason uint8

const (
	// ReasonOK: the ACK carries a valid cookie.
	ReasonOK Reason = iota
	// ReasonBadHash: no current key authenticates the acknowledged ISN for
	// this tuple and client sequence number. Forged ACKs, ACKs for cookies
	// of a key that has rotated out, and segments whose seq is not the
	// client's ISN+1 (e.g. a late data segment) all land here.
	ReasonBadHash
	// ReasonExpired: an authentic cookie older than MaxAge ticks.
	ReasonExpired
	// ReasonFuture: an authentic cookie from the next tick, i.e. minted by a
	// gateway whose clock is ahead of ours.
	ReasonFuture
	// ReasonAckMismatch: the cookie is authentic but the SYN-ACK it belongs
	// to carried a timestamp option that this ACK lacks; RFC 7323 (3.2) says
	// to drop such a segment, and its window scale and SACK are unknowable.
	ReasonAckMismatch
	// ReasonBadTSOptions: the cookie is authentic but the option bits in
	// TSecr are not the ones it was minted with: a middlebox rewrote the
	// timestamp, someone forged it, or the SYN had no timestamps at all (a
	// client must not start using them after the handshake, RFC 7323).
	ReasonBadTSOptions

	numReasons
)

var reasonNames = [numReasons]string{
	ReasonOK:           "ok",
	ReasonBadHash:      "bad_hash",
	ReasonExpired:      "expired",
	ReasonFuture:       "future",
	ReasonAckMismatch:  "ack_mismatch",
	ReasonBadTSOptions: "bad_ts_options",
}

// String returns the label value, e.g. "bad_hash".
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every Reason Check can return, so metrics can pre-create
// one series per label value.
func Reasons() []Reason {
	rs := make([]Reason, numReasons)
	for i := range rs {
		rs[i] = Reason(i)
	}
	return rs
}

// keySet is an immutable pair of epoch keys. Jar swaps whole sets through
// an atomic pointer, so readers never lock and never see a half update.
type keySet struct {
	epoch     int64
	cur, prev sipKey // keys of epoch and epoch-1
}

// Jar mints and checks SYN cookies. It is safe for concurrent use; Make and
// Check take no lock and do not allocate (except, once per epoch, the
// goroutine that first notices a new epoch derives its key).
type Jar struct {
	master []byte
	tick   int64 // nanoseconds
	rot    int64 // nanoseconds
	maxAge uint32
	keys   atomic.Pointer[keySet]
}

// NewJar returns a Jar keyed by master (at least MinSecretLen bytes, e.g.
// from LoadOrCreateSecret). Jars built from the same master and Config
// accept each other's cookies.
func NewJar(master []byte, cfg Config) (*Jar, error) {
	if len(master) < MinSecretLen {
		return nil, fmt.Errorf("new cookie jar: %d-byte secret, need %d: %w", len(master), MinSecretLen, ErrSecretTooShort)
	}
	if cfg.Tick == 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Rotation == 0 {
		cfg.Rotation = time.Duration(cfg.MaxAge+1) * cfg.Tick
	}
	switch {
	case cfg.Tick < time.Millisecond:
		return nil, fmt.Errorf("cookie tick %v below 1ms: %w", cfg.Tick, ErrConfig)
	case cfg.MaxAge < 1 || cfg.MaxAge > MaxMaxAge:
		return nil, fmt.Errorf("cookie max age %d ticks outside 1..%d: %w", cfg.MaxAge, MaxMaxAge, ErrConfig)
	case cfg.Rotation < time.Millisecond:
		return nil, fmt.Errorf("cookie key rotation %v below 1ms: %w", cfg.Rotation, ErrConfig)
	}
	j := &Jar{
		master: append([]byte(nil), master...),
		tick:   int64(cfg.Tick),
		rot:    int64(cfg.Rotation),
		maxAge: uint32(cfg.MaxAge),
	}
	j.keys.Store(j.newKeySet(0, nil))
	return j, nil
}

// Lifetime is the longest a cookie stays valid, (MaxAge+1)*Tick. The caller
// must gate Check with it: only treat an unknown ACK as a cookie when the
// service sent a cookie within the last Lifetime (what Linux does with
// tcp_synq_no_recent_overflow). Otherwise every stray ACK to a service that
// never needed cookies costs a hash and offers a 2^-26 guess.
func (j *Jar) Lifetime() time.Duration { return time.Duration(int64(j.maxAge+1) * j.tick) }

// Rotate makes sure the keys of now's epoch are in place. Make and Check do
// this lazily; calling Rotate from a timer keeps the key derivation (an
// HMAC and an allocation) off the packet path. Time never moves the keys
// backwards: an older now is a no-op.
func (j *Jar) Rotate(now time.Time) { j.keysAt(floorDiv(now.UnixNano(), j.rot)) }

// keysAt returns a key set at least as new as epoch.
func (j *Jar) keysAt(epoch int64) *keySet {
	for {
		ks := j.keys.Load()
		if ks.epoch >= epoch {
			return ks
		}
		next := j.newKeySet(epoch, ks)
		if j.keys.CompareAndSwap(ks, next) {
			return next
		}
	}
}

func (j *Jar) newKeySet(epoch int64, old *keySet) *keySet {
	ks := &keySet{epoch: epoch, cur: deriveKey(j.master, epoch)}
	if old != nil && old.epoch == epoch-1 {
		ks.prev = old.cur
	} else {
		ks.prev = deriveKey(j.master, epoch-1)
	}
	return ks
}

// Make mints the ISN for the SYN-ACK answering a SYN from t with client ISN
// clientISN and options syn. tsClock is our current timestamp clock.
//
// It returns the ISN, the TSval to send (0 when the SYN had no timestamps,
// so no TSval is sent), and the MSS the cookie encodes: the largest table
// entry not above syn.MSS, or the smallest entry (the protocol minimum) when
// syn.MSS is below the second one or absent. That MSS is what Check will
// recover, so it is the MSS the connection must use towards the client.
func (j *Jar) Make(t flow.Tuple, clientISN uint32, syn flow.SynOptions, tsClock uint32, now time.Time) (isn, tsval uint32, mss uint16) {
	key, _, tick := j.mintKey(now)
	table := mssTableFor(t)
	idx := mssIndex(table, syn.MSS)

	var tagIn uint64
	if syn.Timestamps {
		opts := encodeTSOpts(syn)
		tagIn = tsPresent | uint64(opts)
		tsval = tsClock&^tsOptMask | opts
		if int32(tsval-tsClock) > 0 { // never run ahead of our clock
			tsval -= 1 << tsOptBits
		}
	}
	h := cookieHash(key, t, clientISN, tick, idx)
	isn = uint32(tick&tickMask)<<tickShift |
		idx<<mssShift |
		uint32(h&authMask)<<authShift |
		optTag(h, tagIn)
	return isn, tsval, table[idx]
}

// mintKey returns the key, epoch and full tick number a cookie minted at now
// uses.
func (j *Jar) mintKey(now time.Time) (sipKey, int64, int64) {
	ns := now.UnixNano()
	epoch := floorDiv(ns, j.rot)
	ks := j.keysAt(epoch)
	key := ks.cur
	if epoch == ks.epoch-1 { // a slightly stale now, after another goroutine rotated
		key = ks.prev
	}
	return key, epoch, floorDiv(ns, j.tick)
}

// Check validates the ACK that completes a cookie handshake: seq and ack
// are the ACK's sequence and acknowledgment numbers (so the client's ISN is
// seq-1 and the cookie ack-1); hasTS and tsecr describe its timestamp
// option. The caller must only call Check when the service sent cookies
// recently (see Lifetime).
//
// On ReasonOK it returns the recovered SYN options: MSS from the table,
// and, if the handshake used timestamps, window scale, SACK and ECN from
// TSecr (Timestamps and TSecr set; the caller fills TSval from the ACK).
// Without timestamps only the MSS survives: WScale is NoWScale, SACK and ECN
// are off. On any other Reason the options are the zero value.
func (j *Jar) Check(t flow.Tuple, seq, ack uint32, hasTS bool, tsecr uint32, now time.Time) (flow.SynOptions, Reason) {
	cookie, clientISN := ack-1, seq-1
	ns := now.UnixNano()
	ks := j.keysAt(floorDiv(ns, j.rot))
	nowTick := floorDiv(ns, j.tick)

	age := (uint32(nowTick) - cookie>>tickShift) & tickMask
	tick := nowTick - int64(age)
	if age == futureAge {
		tick = nowTick + 1
	}
	idx := cookie >> mssShift & mssMask
	auth := uint64(cookie >> authShift & authMask)
	tag := cookie & tagMask

	var tagIn uint64
	if hasTS {
		tagIn = tsPresent | uint64(tsecr&tsOptMask)
	}
	reason := ReasonBadHash
	for _, key := range [2]sipKey{ks.cur, ks.prev} {
		h := cookieHash(key, t, clientISN, tick, idx)
		if h&authMask != auth {
			continue
		}
		if optTag(h, tagIn) == tag {
			reason = ReasonOK
			break
		}
		// Authentic ISN, wrong timestamp state. Keep looking: the other key
		// may still authenticate it fully.
		if hasTS {
			reason = ReasonBadTSOptions
		} else {
			reason = ReasonAckMismatch
		}
	}
	if reason != ReasonOK {
		return flow.SynOptions{}, reason
	}
	switch {
	case age == futureAge:
		return flow.SynOptions{}, ReasonFuture
	case age > j.maxAge:
		return flow.SynOptions{}, ReasonExpired
	}
	opts := flow.SynOptions{MSS: mssTableFor(t)[idx], WScale: flow.NoWScale}
	if hasTS {
		bits := tsecr & tsOptMask
		if w := bits & tsWScale; w != tsWScale {
			opts.WScale = uint8(w)
		}
		opts.SACK = bits&tsSACK != 0
		opts.ECN = bits&tsECN != 0
		opts.Timestamps = true
		opts.TSecr = tsecr
	}
	return opts, ReasonOK
}

// cookieHash is the keyed hash behind every cookie: SipHash-2-4 over the
// addresses (IPv4 as IPv4-mapped IPv6, so one layout serves both), ports,
// client ISN, full tick number and MSS index.
func cookieHash(k sipKey, t flow.Tuple, clientISN uint32, tick int64, idx uint32) uint64 {
	c := t.Client.Addr().As16()
	s := t.Service.Addr().As16()
	return sipHash6(k,
		binary.BigEndian.Uint64(c[0:8]),
		binary.BigEndian.Uint64(c[8:16]),
		binary.BigEndian.Uint64(s[0:8]),
		binary.BigEndian.Uint64(s[8:16]),
		uint64(t.Client.Port())<<48|uint64(t.Service.Port())<<32|uint64(clientISN),
		uint64(tick)<<8|uint64(idx),
	)
}

// optTag authenticates the timestamp option bits (in) with the hash bits
// the ISN does not carry: a multiply-add-shift hash keyed by two 22-bit
// words of h. That family is pairwise independent for 7-bit inputs, so
// someone who saw a cookie and its TSval still guesses the tag of any other
// option bits with probability 2^-8.
func optTag(h, in uint64) uint32 {
	a := h >> authBits & tagWordMask
	b := h >> (authBits + tagWordBits) & tagWordMask
	return uint32((a*in+b)&tagWordMask) >> (tagWordBits - tagBits)
}

func encodeTSOpts(syn flow.SynOptions) uint32 {
	opts := uint32(tsWScale)
	if syn.HasWScale() {
		opts = uint32(min(syn.WScale, flow.MaxWScale)) // RFC 7323: use 14 for anything larger
	}
	if syn.SACK {
		opts |= tsSACK
	}
	if syn.ECN {
		opts |= tsECN
	}
	return opts
}

func mssTableFor(t flow.Tuple) *[4]uint16 {
	if t.Is6() {
		return &mssTable6
	}
	return &mssTable4
}

// mssIndex rounds mss down to a table entry; anything below the second
// entry, including an absent MSS, maps to the first.
func mssIndex(table *[4]uint16, mss uint16) uint32 {
	for i := len(table) - 1; i > 0; i-- {
		if mss >= table[i] {
			return uint32(i)
		}
	}
	return 0
}

// floorDiv divides rounding towards minus infinity, so times before 1970
// still land in well-ordered ticks and epochs.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
