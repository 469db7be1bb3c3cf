package queue

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"
)

// CookiePolicy says when a service answers SYNs with SYN cookies instead of
// half-open entries, like net.ipv4.tcp_syncookies.
type CookiePolicy int

const (
	// CookiesNever drops SYNs once the half-open queue is full
	// (tcp_syncookies=0, TCPReqQFullDrop). ACKs are never checked as cookies.
	CookiesNever CookiePolicy = iota
	// CookiesAuto queues SYNs while there is room and sends cookies when the
	// queue is full (tcp_syncookies=1, TCPReqQFullDoCookies).
	CookiesAuto
	// CookiesAlways answers every SYN with a cookie and keeps no half-open
	// state (tcp_syncookies=2).
	CookiesAlways
)

var cookiePolicyNames = [...]string{CookiesNever: "never", CookiesAuto: "auto", CookiesAlways: "always"}

// String returns the policy's configuration name.
func (p CookiePolicy) String() string {
	if p < 0 || int(p) >= len(cookiePolicyNames) {
		return fmt.Sprintf("CookiePolicy(%d)", int(p))
	}
	return cookiePolicyNames[p]
}

// ParseCookiePolicy reads "never", "auto" or "always" (case-insensitive).
func ParseCookiePolicy(s string) (CookiePolicy, error) {
	for i, n := range cookiePolicyNames {
		if strings.EqualFold(s, n) {
			return CookiePolicy(i), nil
		}
	}
	return 0, fmt.Errorf("cookie policy %q (want never, auto or always): %w", s, ErrUnknownPolicy)
}

// OverflowPolicy says what happens to a validated handshake ACK when the
// accept queue is full, like net.ipv4.tcp_abort_on_overflow.
type OverflowPolicy int

const (
	// OverflowDrop ignores the ACK (tcp_abort_on_overflow=0): the client
	// retransmits or sends data, and that segment is validated again, which
	// rides out a short burst of a slow backend.
	OverflowDrop OverflowPolicy = iota
	// OverflowReset tells the caller to answer with a RST
	// (tcp_abort_on_overflow=1), so the client fails fast.
	OverflowReset
)

var overflowPolicyNames = [...]string{OverflowDrop: "drop", OverflowReset: "reset"}

// String returns the policy's configuration name.
func (p OverflowPolicy) String() string {
	if p < 0 || int(p) >= len(overflowPolicyNames) {
		return fmt.Sprintf("OverflowPolicy(%d)", int(p))
	}
	return overflowPolicyNames[p]
}

// ParseOverflowPolicy reads "drop" or "reset" (case-insensitive).
func ParseOverflowPolicy(s string) (OverflowPolicy, error) {
	for i, n := range overflowPolicyNames {
		if strings.EqualFold(s, n) {
			return OverflowPolicy(i), nil
		}
	}
	return 0, fmt.Errorf("overflow policy %q (want drop or reset): %w", s, ErrUnknownPolicy)
}

var (
	// ErrUnknownPolicy is returned by the Parse functions for a name they do
	// not know.
	ErrUnknownPolicy = errors.New("unknown policy")
	// ErrInvalidConfig is wrapped by NewListener for every rejected Config.
	ErrInvalidConfig = errors.New("invalid listener config")
)

// Limits and defaults, taken from Linux where it has one.
const (
	// DefaultCookieTick is the period of the cookie time counter; an ACK is
	// checked as a cookie for two ticks after the last overflow.
	DefaultCookieTick = 64 * time.Second
	// DefaultSynAckRetries is Linux's net.ipv4.tcp_synack_retries.
	DefaultSynAckRetries = 5
	// MaxSynAckRetries is the largest value Linux accepts for
	// tcp_synack_retries.
	MaxSynAckRetries = 255
	// DefaultResendInterval is Linux's net.ipv4.tcp_invalid_ratelimit: a
	// retransmitted SYN gets at most one SYN-ACK per interval.
	DefaultResendInterval = 500 * time.Millisecond
	// InitialRTO is the first SYN-ACK retransmission timeout
	// (TCP_TIMEOUT_INIT); it doubles with every retransmission.
	InitialRTO = time.Second
	// MaxRTO caps the doubled timeout (TCP_RTO_MAX).
	MaxRTO = 120 * time.Second
	// MaxQueueLen bounds both queues so that a typo in a config cannot
	// make NewListener allocate gigabytes.
	MaxQueueLen = 1 << 24
	// MaxShards bounds Config.Shards.
	MaxShards = 256
	// DefaultPeerCookieChecks is how many ACKs per second a CookiesAuto
	// listener checks as cookies while its own gate is closed, so that a
	// cookie minted by another gateway sharing the secret validates after
	// an ECMP change. Each check accepts a forged ACK with probability
	// 2^-26 (see package cookie), so a blind-ACK attack wins at most
	// 10^4 * 2^-26 = 1.5e-4 connections per second (one per 1.9 hours).
	DefaultPeerCookieChecks = 10000
)

// Config is the listen-path configuration of one service. The zero value is
// not valid; start from DefaultConfig.
type Config struct {
	// MaxSynBacklog caps the half-open queue (tcp_max_syn_backlog). It may
	// be 0 only with CookiesAlways, which never queues.
	MaxSynBacklog int
	// SynAckRetries is how many times an unanswered SYN-ACK is retransmitted
	// (tcp_synack_retries), 0..MaxSynAckRetries; 0 means never.
	SynAckRetries int
	// Cookies is the SYN cookie policy.
	Cookies CookiePolicy
	// Backlog is the service's listen backlog; the accept queue holds
	// min(Backlog, Somaxconn) connections.
	Backlog int
	// Somaxconn is the global cap on Backlog (net.core.somaxconn).
	Somaxconn int
	// Overflow says what to do with a valid ACK when the accept queue is full.
	Overflow OverflowPolicy
	// CookieTick is the cookie counter period; zero means DefaultCookieTick.
	CookieTick time.Duration
	// ResendInterval rate-limits SYN-ACKs sent in answer to retransmitted
	// SYNs, per entry; zero means DefaultResendInterval, negative disables
	// the limit.
	ResendInterval time.Duration
	// Shards splits the half-open queue into this many separately locked
	// parts (a power of two up to MaxShards); zero picks a count from
	// MaxSynBacklog. More shards mean less lock contention between receive
	// queues but an occasional early overflow of one shard (see
	// Listener.OnSYN).
	Shards int
	// PeerCookieChecks bounds, per second, the ACKs a CookiesAuto listener
	// checks as cookies while its own gate is closed (it has not
	// overflowed within two cookie ticks): those can only carry cookies
	// minted by a peer gateway sharing the secret. Zero means
	// DefaultPeerCookieChecks; negative checks none (Linux's behaviour).
	PeerCookieChecks int
}

// DefaultConfig returns Linux's defaults for a listener with a 4096 backlog.
func DefaultConfig() Config {
	return Config{
		MaxSynBacklog: 4096,
		SynAckRetries: DefaultSynAckRetries,
		Cookies:       CookiesAuto,
		Backlog:       4096,
		Somaxconn:     4096,
		Overflow:      OverflowDrop,
		CookieTick:    DefaultCookieTick,
	}
}

// withDefaults validates c and fills in the zero-means-default fields.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidConfig)
	}
	switch {
	case c.Cookies < CookiesNever || c.Cookies > CookiesAlways:
		return bad("cookie policy %d", int(c.Cookies))
	case c.Overflow < OverflowDrop || c.Overflow > OverflowReset:
		return bad("overflow policy %d", int(c.Overflow))
	case c.MaxSynBacklog < 0 || c.MaxSynBacklog > MaxQueueLen:
		return bad("max syn backlog %d out of range 0..%d", c.MaxSynBacklog, MaxQueueLen)
	case c.MaxSynBacklog == 0 && c.Cookies != CookiesAlways:
		return bad("max syn backlog 0 needs cookie policy always, have %s", c.Cookies)
	case c.SynAckRetries < 0 || c.SynAckRetries > MaxSynAckRetries:
		return bad("synack retries %d out of range 0..%d", c.SynAckRetries, MaxSynAckRetries)
	case c.Backlog < 1:
		return bad("backlog %d, want at least 1", c.Backlog)
	case c.Somaxconn < 1:
		return bad("somaxconn %d, want at least 1", c.Somaxconn)
	case min(c.Backlog, c.Somaxconn) > MaxQueueLen:
		return bad("accept queue %d larger than %d", min(c.Backlog, c.Somaxconn), MaxQueueLen)
	case c.CookieTick < 0:
		return bad("cookie tick %s is negative", c.CookieTick)
	case c.Shards < 0 || c.Shards > MaxShards || bits.OnesCount(uint(c.Shards)) > 1:
		return bad("shards %d, want 0 or a power of two up to %d", c.Shards, MaxShards)
	}
	if c.CookieTick == 0 {
		c.CookieTick = DefaultCookieTick
	}
	if c.ResendInterval == 0 {
		c.ResendInterval = DefaultResendInterval
	}
	if c.Shards == 0 {
		c.Shards = autoShards(c.MaxSynBacklog)
	}
	if c.PeerCookieChecks == 0 {
		c.PeerCookieChecks = DefaultPeerCookieChecks
	}
	return c, nil
}

// autoShards gives each shard at least 256 entries, so small queues keep an
// exact global bound, and stops at 64, beyond which lock contention is not
// the bottleneck on any machine syngate targets.
func autoShards(backlog int) int {
	n := 1
	for n < 64 && backlog/(2*n) >= 256 {
		n *= 2
	}
	return n
}
