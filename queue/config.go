package queue

import (
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/syngate/syngate/spec"
)

// ErrInvalidConfig is wrapped by NewListener for every rejected Config.
var ErrInvalidConfig = errors.New("invalid listener config")

// Limits and defaults, taken from Linux where it has one.
const (
	// DefaultCookieTick is the period of the cookie time counter; an ACK is
	// checked as a cookie for two ticks after the last overflow.
	DefaultCookieTick = 64 * time.Second
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
)

// Config is the listen-path configuration of one service: its limits
// and policies as configured (spec.Limits: MaxSynBacklog may be 0 only
// with CookiesAlways, which never queues; PeerCookieChecks 0 checks none),
// and the listener's own timing. The zero value is not valid; start from
// DefaultConfig.
type Config struct {
	spec.Limits
	// Cookies is the SYN cookie policy.
	Cookies spec.CookiePolicy
	// Overflow says what to do with a valid ACK when the accept queue is full.
	Overflow spec.OverflowPolicy
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
}

// DefaultConfig returns Linux's defaults (spec.DefaultLimits).
func DefaultConfig() Config {
	return Config{
		Limits:     spec.DefaultLimits(),
		Cookies:    spec.CookiesAuto,
		Overflow:   spec.OverflowDrop,
		CookieTick: DefaultCookieTick,
	}
}

// withDefaults validates c and fills in the zero-means-default fields.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidConfig)
	}
	switch {
	case !c.Cookies.Valid():
		return bad("cookie policy %q", c.Cookies)
	case !c.Overflow.Valid():
		return bad("overflow policy %q", c.Overflow)
	case c.MaxSynBacklog < 0 || c.MaxSynBacklog > MaxQueueLen:
		return bad("max syn backlog %d out of range 0..%d", c.MaxSynBacklog, MaxQueueLen)
	case c.MaxSynBacklog == 0 && c.Cookies != spec.CookiesAlways:
		return bad("max syn backlog 0 needs cookie policy always, have %s", c.Cookies)
	case c.SynAckRetries < 0 || c.SynAckRetries > spec.MaxSynAckRetries:
		return bad("synack retries %d out of range 0..%d", c.SynAckRetries, spec.MaxSynAckRetries)
	case c.PeerCookieChecks < 0:
		return bad("peer cookie checks %d is negative", c.PeerCookieChecks)
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
