package cookie

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
)

// TestForgedACKFalseAccept measures the false-accept rate of blind ACKs:
// random sequence and acknowledgment numbers, random timestamp echo, against
// a Jar with both keys live. A forged ACK must match the 19 auth bits under
// one of two keys (2 * 2^-19 = 2^-18) and then the 8-bit tag (2^-8):
// 2^-26 = 1.49e-8 per ACK. The test counts the auth matches (expected
// N * 2^-18, Poisson) and the full accepts (expected N * 2^-26) and checks
// both against the bound. The tick field is left random too, which only
// lowers the rate (7 of 8 tick values are expired or future).
func TestForgedACKFalseAccept(t *testing.T) {
	n := 1 << 22
	if testing.Short() {
		n = 1 << 18
	}
	j, err := NewJar(make([]byte, MinSecretLen), Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Mid-epoch, so the previous epoch's key is live too.
	now := time.Unix(1_700_000_000, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	svc := netip.MustParseAddrPort("192.0.2.10:80")
	var authPass, accepts int
	for i := range n {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), uint16(1024+rng.IntN(60000)))
		tup := flow.Tuple{Client: c, Service: svc}
		seq, ack := rng.Uint32(), rng.Uint32()
		// Force a live tick into the cookie, as a forger would: only the
		// auth and tag bits are left to guess.
		nowTick := uint32(now.UnixNano() / int64(DefaultTick))
		ack = (nowTick&tickMask)<<tickShift | ack&^(tickMask<<tickShift)
		ack++ // Check reads the cookie as ack-1
		hasTS := rng.IntN(2) == 0
		_, r := j.Check(tup, seq, ack, hasTS, rng.Uint32(), now)
		switch r {
		case ReasonOK:
			accepts++
			authPass++
		case ReasonBadTSOptions, ReasonAckMismatch, ReasonExpired, ReasonFuture:
			authPass++
		}
	}
	wantAuth := float64(n) * 2 / (1 << authBits)
	wantAccept := float64(n) / (1 << (authBits + tagBits - 1))
	t.Logf("%d forged ACKs: %d passed the 19-bit auth (expected %.1f), %d accepted (expected %.4f; bound 2^-26 = %.3g per ACK)",
		n, authPass, wantAuth, accepts, wantAccept, math.Ldexp(1, -26))
	// Poisson tails: far outside these is a broken hash or check, not luck
	// (each side is below 1e-6 for the expected counts here).
	if lo, hi := wantAuth-6*math.Sqrt(wantAuth)-1, wantAuth+6*math.Sqrt(wantAuth)+3; float64(authPass) < lo || float64(authPass) > hi {
		t.Errorf("auth passes %d outside [%.0f, %.0f]", authPass, lo, hi)
	}
	if float64(accepts) > wantAccept+6*math.Sqrt(wantAccept)+3 {
		t.Errorf("%d accepts, bound says about %.3f", accepts, wantAccept)
	}
}
