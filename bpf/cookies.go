package bpf

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/cookie"
)

// CookieKeyGrace is how long past DataplaneKey.Expires the program keeps
// minting with a key before it leaves SYNs to the engine. A key a few
// seconds stale still mints cookies Check accepts (it takes the previous
// epoch's key and MaxAge old ticks), so a late refresh costs nothing; a
// gateway that stopped refreshing must not mint with it forever.
const CookieKeyGrace = 5 * time.Second

// SetCookieKey gives the program the key and tick to mint cookies with for
// service entries with Offload or Standby, and sets its timestamp clock. Call it
// with jar.DataplaneKey(time.Now()) every second (and at Expires): the
// program mints with a key only until Expires + CookieKeyGrace, so it never
// mints with a key Check no longer accepts. The zero DataplaneKey stops the
// minting; so does a process restart (the map is not pinned).
//
// The key is a secret and is only written to the map (never logged).
//
// The TSval clock of the program's SYN-ACKs is wall-clock milliseconds
// mod 2^32, the engine's uint32(now.UnixMilli()): the program adds to
// bpf_ktime_get_ns (CLOCK_MONOTONIC) the offset CLOCK_REALTIME -
// CLOCK_MONOTONIC measured here, so a wall-clock step reaches the program
// with the next call.
//
// Readers never see a half-written key: the map holds two slots and an
// index; the unused slot is written first, then the index flipped.
func (d *Dataplane) SetCookieKey(k cookie.DataplaneKey) error {
	mono, real := clocks()
	var until int64
	if !k.Expires.IsZero() {
		until = mono + (k.Expires.UnixNano() - real) + int64(CookieKeyGrace)
		until = max(until, 0)
	}
	d.ckMu.Lock()
	defer d.ckMu.Unlock()
	st := d.cookie
	next := 1 - st.Active&1
	s := &st.Slot[next]
	s.K0, s.K1, s.Tick = k.K0, k.K1, uint64(k.Tick)
	s.ClockOffNs = uint64(real - mono)
	s.ValidUntilNs = uint64(until)
	if err := d.objs.CookieKeys.Put(uint32(0), &st); err != nil {
		return fmt.Errorf("set cookie key: %w", err)
	}
	d.cookie = st // the map now holds it, whatever happens next
	st.Active = next
	if err := d.objs.CookieKeys.Put(uint32(0), &st); err != nil {
		return fmt.Errorf("set cookie key: switch slot: %w", err)
	}
	d.cookie = st
	return nil
}

// clocks reads CLOCK_MONOTONIC (the clock of bpf_ktime_get_ns) and
// CLOCK_REALTIME at about the same instant: the monotonic reading is the
// midpoint of two taken around the real-time one.
func clocks() (mono, real int64) {
	var a, r, b unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &a) // these clocks cannot fail
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &r)
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &b)
	return a.Nano() + (b.Nano()-a.Nano())/2, r.Nano()
}
