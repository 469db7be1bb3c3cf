// Package cookie mints and checks TCP SYN cookies: the stateless
// SYN-ACK sequence numbers that let a listener survive a SYN flood.
//
//	secret, err := cookie.LoadOrCreateSecret("/var/lib/syngate/cookie.key")
//	if err != nil { ... }
//	jar, err := cookie.NewJar(secret, cookie.Config{}) // 64 s ticks, 1 tick of grace
//	if err != nil { ... }
//
//	// SYN from t with client ISN seq and parsed options syn:
//	isn, tsval, mss := jar.Make(t, seq, syn, ourTSClock, now)
//	// send SYN-ACK: seq=isn, ack=seq+1, MSS option mss, TSval tsval if syn.Timestamps
//
//	// Later, an ACK for which no half-open entry exists, on a service that
//	// sent cookies within jar.Lifetime():
//	opts, reason := jar.Check(t, ack.Seq, ack.Ack, ack.HasTS, ack.TSecr, now)
//	if reason != cookie.ReasonOK { dropped.WithLabelValues(reason.String()).Inc(); return }
//
// Time is always passed in; nothing here reads the clock. Make and Check do
// not allocate and take no lock; Rotate (or the first call of a new key
// epoch) swaps in a fresh immutable key set through an atomic pointer.
//
// # Gating
//
// Check must not be applied to every unknown ACK: the caller (queue/)
// consults it only for a service that sent a cookie within Lifetime, as
// Linux does. Each Check on a forged ACK is a 2^-26 guess at a connection.
//
// # Keys
//
// The SipHash-2-4 key of epoch e (e = unix time / Rotation) is the first
// 128 bits of HMAC-SHA256(master, label || e). Keys of the current and the
// previous epoch are accepted. Gateways given the same master secret (and
// the same Config, and synchronised clocks) accept each other's cookies.
//
// # Minting in the XDP program
//
// DataplaneKey exports the current epoch's SipHash key and the tick number
// so that the XDP program (package bpf) can answer SYNs itself with the very
// cookies Make would mint; Check cannot tell them apart. The key is a
// secret: it goes to the program's map and nowhere else, and its String and
// LogValue methods leave it out. The minter hashes the 48-byte message of
// six little-endian words: client address (IPv4 as ::ffff:a.b.c.d) and
// service address as two words each, holding the big-endian reading of
// their bytes; client port<<48 | service port<<32 | client ISN; tick<<8 |
// MSS index.
//
// # ISN layout
//
//	31   29 28 27 26                                  8 7        0
//	+------+-----+-------------------------------------+-----------+
//	| tick | mss |          auth (19 bits)             | tag (8)   |
//	+------+-----+-------------------------------------+-----------+
//
// The fields:
//
//   - tick: the tick number (unix time / Tick) mod 8. Check rebuilds the full
//     tick from it (ages 0..6 back, 7 meaning one tick ahead), so it can tell
//     an expired or future cookie from a forged one: the hash covers the full
//     tick number, and ReasonExpired and ReasonFuture are only reported for
//     cookies that authenticate. Three bits allow MaxAge up to 6.
//   - mss: index into the MSS table (IPv4 536, 1300, 1440, 1460; IPv6 1220,
//     1420, 1440, 8940), rounded down.
//   - auth: low 19 bits of h = SipHash-2-4(key, client addr, service addr,
//     ports, client ISN, full tick, mss index).
//   - tag: an 8-bit MAC of the timestamp option bits (below), keyed by other
//     bits of h.
//
// auth and tag together are 27 bits a blind attacker must guess. Two keys
// are accepted, so an ACK with the tick bits set right passes with
// probability 2^-26 (Linux's layout: about 2^-22), and a uniformly random
// ACK with (MaxAge+1)/8 of that, 2^-28 with the defaults. The split lets
// Check name the failure: an ACK whose auth matches but whose tag does not
// is an authentic cookie with the wrong timestamp state (ReasonAckMismatch,
// ReasonBadTSOptions), not a forgery: only 2^-18 of forged ACKs match auth
// by chance and are counted there instead of as bad_hash. The price is that someone who saw the
// SYN-ACK can change the option bits in TSecr and pass with probability 2^-8
// (Linux: always).
//
// # Why the client ISN is inside the hash
//
// Linux adds the client ISN to the cookie outside the hash, so decoding
// subtracts whatever seq the segment carries; a data segment from an
// established connection whose state was lost can then decode as a valid
// cookie ACK. Here the client ISN (seq-1) is hashed: only a segment whose seq
// is exactly the client's ISN+1 (the handshake ACK, or the first data
// segment when that ACK was lost) validates; anything later is
// ReasonBadHash.
//
// # TSval layout
//
// When the SYN carried timestamps, the SYN-ACK's TSval is our timestamp
// clock with its low 6 bits replaced, and the client echoes it in TSecr:
//
//	bits 3..0  window scale shift, 0xf = no window scaling (shifts above 14 are sent as 14)
//	bit  4     SACK permitted
//	bit  5     ECN requested (ECE and CWR on the SYN)
//
// If replacing the bits would put TSval ahead of the clock, 64 is
// subtracted, so TSval stays within 64 ticks behind our clock and monotonic
// enough for PAWS. The bits are covered by tag, so a rewritten TSecr is
// caught (ReasonBadTSOptions) rather than silently changing the options.
//
// # What is lost without timestamps
//
// If the SYN had no timestamp option there is nowhere to keep window scale,
// SACK-permitted or ECN: Check returns only the MSS, with WScale NoWScale
// and SACK and ECN off, as Linux does. The connection then runs without
// window scaling (64 KiB window) and without SACK. If the SYN had timestamps
// but the ACK has none, the options cannot be recovered and RFC 7323 says to
// drop the segment: ReasonAckMismatch. If the SYN had none but the ACK
// has one, the client is broken (RFC 7323 only enables timestamps when both
// SYNs carry them) and Check says ReasonBadTSOptions.
package cookie
