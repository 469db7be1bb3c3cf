package cookie

import (
	"fmt"
	"log/slog"
	"time"
)

// DataplaneKey is the part of a Jar's state that another minter, the XDP
// program, needs to mint cookies Check accepts: the SipHash-2-4 key of the
// current epoch and the current tick number. The MSS tables, the ISN and
// TSval layouts are fixed (see the package doc) and compiled into the
// minter.
//
// K0 and K1 are a secret: anyone who has them can forge cookies for the
// whole epoch. Hand them only to the XDP program and never log them; the
// String, GoString and LogValue methods print the epoch and tick only.
type DataplaneKey struct {
	K0, K1 uint64 // SipHash-2-4 key, the two little-endian words of its 16 bytes
	Epoch  int64  // key epoch: unix time / Config.Rotation
	Tick   int64  // full tick number (unix time / Config.Tick) to hash and put in the ISN
	// Expires is when Epoch or Tick next changes: the minter must get a
	// fresh key by then. A stale key still mints valid cookies for a
	// while (Check accepts the previous epoch's key and MaxAge old ticks),
	// but their lifetime shrinks by the staleness.
	Expires time.Time
}

// DataplaneKey returns the key and tick that Make would use at now, for the
// XDP program. A cookie the program mints with it for (tuple, client ISN,
// options) is the one Make mints at now.
func (j *Jar) DataplaneKey(now time.Time) DataplaneKey {
	key, epoch, tick := j.mintKey(now)
	nextTick := (tick + 1) * j.tick
	nextEpoch := (epoch + 1) * j.rot
	return DataplaneKey{
		K0: key.k0, K1: key.k1, Epoch: epoch, Tick: tick,
		Expires: time.Unix(0, min(nextTick, nextEpoch)),
	}
}

// String prints the epoch, tick and expiry, never the key.
func (k DataplaneKey) String() string {
	return fmt.Sprintf("cookie.DataplaneKey{epoch %d, tick %d, expires %s, key redacted}",
		k.Epoch, k.Tick, k.Expires.UTC().Format(time.RFC3339Nano))
}

// GoString keeps %#v from printing the key.
func (k DataplaneKey) GoString() string { return k.String() }

// LogValue keeps slog from printing the key.
func (k DataplaneKey) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("epoch", k.Epoch),
		slog.Int64("tick", k.Tick),
		slog.Time("expires", k.Expires),
	)
}
