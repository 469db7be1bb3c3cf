package cookie

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// base is the start of a 64 s tick (1.7e9 = 64 * 26562500), 80000 s into a
// 24 h key epoch, so tests moving a few ticks with longKeys keep one epoch.
var base = time.Unix(1_700_000_000, 0)

func mustJar(t testing.TB, secret []byte, cfg Config) *Jar {
	t.Helper()
	j, err := NewJar(secret, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// longKeys keeps one key epoch across the tick tests.
var longKeys = Config{Rotation: 24 * time.Hour}

var (
	tuple4 = flow.Tuple{
		Client:  netip.MustParseAddrPort("198.51.100.7:40000"),
		Service: netip.MustParseAddrPort("203.0.113.10:443"),
	}
	tuple6 = flow.Tuple{
		Client:  netip.MustParseAddrPort("[2001:db8::7]:40000"),
		Service: netip.MustParseAddrPort("[2001:db8:1::10]:443"),
	}
)

func randTuple(r *rand.Rand, v6 bool) flow.Tuple {
	var c, s netip.Addr
	if v6 {
		var a, b [16]byte
		for i := range a {
			a[i], b[i] = byte(r.Uint32()), byte(r.Uint32())
		}
		a[0], b[0] = 0x20, 0x20 // keep clear of the IPv4-mapped range
		c, s = netip.AddrFrom16(a), netip.AddrFrom16(b)
	} else {
		var a, b [4]byte
		for i := range a {
			a[i], b[i] = byte(r.Uint32()), byte(r.Uint32())
		}
		c, s = netip.AddrFrom4(a), netip.AddrFrom4(b)
	}
	return flow.Tuple{
		Client:  netip.AddrPortFrom(c, uint16(r.Uint32())),
		Service: netip.AddrPortFrom(s, uint16(r.Uint32())),
	}
}

func randSyn(r *rand.Rand) flow.SynOptions {
	o := flow.SynOptions{
		MSS:        uint16(r.IntN(9500)),
		WScale:     uint8(r.IntN(18)), // 15..17 exercise clamping
		SACK:       r.IntN(2) == 0,
		Timestamps: r.IntN(2) == 0,
		ECN:        r.IntN(2) == 0,
	}
	if r.IntN(4) == 0 {
		o.WScale = flow.NoWScale
	}
	if o.Timestamps {
		o.TSval = r.Uint32()
	}
	return o
}

// wantOptions is what Check must recover from a cookie minted for syn.
func wantOptions(syn flow.SynOptions, mss uint16, tsval uint32) flow.SynOptions {
	want := flow.SynOptions{MSS: mss, WScale: flow.NoWScale}
	if syn.Timestamps {
		want.Timestamps = true
		want.TSecr = tsval
		want.SACK = syn.SACK
		want.ECN = syn.ECN
		if syn.HasWScale() {
			want.WScale = min(syn.WScale, flow.MaxWScale)
		}
	}
	return want
}

func TestRoundTrip(t *testing.T) {
	j := mustJar(t, testSecret, Config{})
	r := rand.New(rand.NewPCG(7, 7))
	for _, v6 := range []bool{false, true} {
		for range 20000 {
			tu := randTuple(r, v6)
			isn := r.Uint32()
			syn := randSyn(r)
			tsClock := r.Uint32()
			// Anywhere in the current or the next tick (age 0 or 1).
			made := base.Add(time.Duration(r.Int64N(int64(10 * DefaultTick))))
			checked := made.Add(time.Duration(r.Int64N(int64(DefaultTick))))
			cookie, tsval, mss := j.Make(tu, isn, syn, tsClock, made)
			got, reason := j.Check(tu, isn+1, cookie+1, syn.Timestamps, tsval, checked)
			if reason != ReasonOK {
				t.Fatalf("%v isn %d syn %+v: reason %v", tu, isn, syn, reason)
			}
			if want := wantOptions(syn, mss, tsval); got != want {
				t.Fatalf("%v syn %+v: recovered %+v, want %+v", tu, syn, got, want)
			}
			if !syn.Timestamps && tsval != 0 {
				t.Fatalf("no timestamps in SYN but tsval %d", tsval)
			}
			if syn.Timestamps {
				if behind := tsClock - tsval; behind >= 64 {
					t.Fatalf("tsval %d is %d behind clock %d (or ahead)", tsval, behind, tsClock)
				}
			}
		}
	}
}

func TestMSSTable(t *testing.T) {
	j := mustJar(t, testSecret, Config{})
	cases := []struct {
		tu       flow.Tuple
		in, want uint16
	}{
		{tuple4, 0, 536}, {tuple4, 500, 536}, {tuple4, 536, 536}, {tuple4, 1299, 536},
		{tuple4, 1300, 1300}, {tuple4, 1439, 1300}, {tuple4, 1440, 1440}, {tuple4, 1459, 1440},
		{tuple4, 1460, 1460}, {tuple4, 9000, 1460}, {tuple4, 65535, 1460},
		{tuple6, 0, 1220}, {tuple6, 1219, 1220}, {tuple6, 1419, 1220}, {tuple6, 1420, 1420},
		{tuple6, 1439, 1420}, {tuple6, 1440, 1440}, {tuple6, 8939, 1440}, {tuple6, 8940, 8940},
		{tuple6, 65535, 8940},
	}
	for _, c := range cases {
		isn, _, mss := j.Make(c.tu, 1, flow.SynOptions{MSS: c.in, WScale: flow.NoWScale}, 0, base)
		if mss != c.want {
			t.Errorf("%v MSS %d: encoded %d, want %d", c.tu.Service, c.in, mss, c.want)
		}
		opts, reason := j.Check(c.tu, 2, isn+1, false, 0, base)
		if reason != ReasonOK || opts.MSS != c.want {
			t.Errorf("%v MSS %d: recovered %d (%v), want %d", c.tu.Service, c.in, opts.MSS, reason, c.want)
		}
	}
}

// An IPv4-mapped IPv6 tuple is the IPv4 connection: same table, same cookie.
func TestMappedIPv4IsIPv4(t *testing.T) {
	j := mustJar(t, testSecret, Config{})
	mapped := flow.Tuple{
		Client:  netip.AddrPortFrom(netip.AddrFrom16(tuple4.Client.Addr().As16()), tuple4.Client.Port()),
		Service: netip.AddrPortFrom(netip.AddrFrom16(tuple4.Service.Addr().As16()), tuple4.Service.Port()),
	}
	syn := flow.SynOptions{MSS: 1460, WScale: flow.NoWScale}
	isn, _, mss := j.Make(tuple4, 99, syn, 0, base)
	isn2, _, mss2 := j.Make(mapped, 99, syn, 0, base)
	if isn != isn2 || mss != mss2 {
		t.Fatalf("mapped tuple: isn %#x mss %d, plain: isn %#x mss %d", isn2, mss2, isn, mss)
	}
}

func TestTSval(t *testing.T) {
	j := mustJar(t, testSecret, Config{})
	cases := []struct {
		clock uint32
		syn   flow.SynOptions
		want  uint32
	}{
		// 1000 = 960 + 40. Options 0x2f (ECN, wscale none) fit below 40? no: 47 > 40, so step back 64.
		{1000, flow.SynOptions{Timestamps: true, WScale: flow.NoWScale, ECN: true}, 960 - 64 + 0x2f},
		// wscale 7 + SACK = 0x17 = 23 <= 40: same 64-block.
		{1000, flow.SynOptions{Timestamps: true, WScale: 7, SACK: true}, 960 + 0x17},
		// wscale 20 is clamped to 14.
		{1000, flow.SynOptions{Timestamps: true, WScale: 20}, 960 + 14},
		// Near zero the step back wraps, staying serially behind the clock.
		{3, flow.SynOptions{Timestamps: true, WScale: 10}, 0xffffffff - 64 + 10 + 1},
		{0xffffffff, flow.SynOptions{Timestamps: true, WScale: flow.NoWScale, SACK: true, ECN: true}, 0xffffffff},
	}
	for _, c := range cases {
		isn, tsval, _ := j.Make(tuple4, 5, c.syn, c.clock, base)
		if tsval != c.want {
			t.Errorf("clock %d syn %+v: tsval %d, want %d", c.clock, c.syn, tsval, c.want)
		}
		got, reason := j.Check(tuple4, 6, isn+1, true, tsval, base)
		if want := wantOptions(c.syn, 536, tsval); reason != ReasonOK || got != want {
			t.Errorf("clock %d syn %+v: %v %+v, want %+v", c.clock, c.syn, reason, got, want)
		}
	}
}

func TestReasons(t *testing.T) {
	j := mustJar(t, testSecret, longKeys)
	tick := DefaultTick
	syn := flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 1}
	const cISN = 0x12345678
	isn, tsval, _ := j.Make(tuple4, cISN, syn, 777777, base)
	check := func(tu flow.Tuple, seq, ack uint32, hasTS bool, tsecr uint32, now time.Time) Reason {
		t.Helper()
		opts, r := j.Check(tu, seq, ack, hasTS, tsecr, now)
		if r != ReasonOK && opts != (flow.SynOptions{}) {
			t.Errorf("reason %v with non-zero options %+v", r, opts)
		}
		return r
	}
	otherPort := tuple4
	otherPort.Client = netip.AddrPortFrom(tuple4.Client.Addr(), tuple4.Client.Port()+1)
	cases := []struct {
		name string
		got  Reason
		want Reason
	}{
		{"valid", check(tuple4, cISN+1, isn+1, true, tsval, base), ReasonOK},
		{"valid, end of next tick", check(tuple4, cISN+1, isn+1, true, tsval, base.Add(2*tick-1)), ReasonOK},
		{"forged ack", check(tuple4, cISN+1, isn+1^0x100, true, tsval, base), ReasonBadHash},
		{"late data segment", check(tuple4, cISN+1+1448, isn+1, true, tsval, base), ReasonBadHash},
		{"other client port", check(otherPort, cISN+1, isn+1, true, tsval, base), ReasonBadHash},
		{"other mss index", check(tuple4, cISN+1, (isn^1<<mssShift)+1, true, tsval, base), ReasonBadHash},
		{"two ticks old", check(tuple4, cISN+1, isn+1, true, tsval, base.Add(2*tick)), ReasonExpired},
		{"six ticks old", check(tuple4, cISN+1, isn+1, true, tsval, base.Add(6*tick)), ReasonExpired},
		{"eight ticks old wraps", check(tuple4, cISN+1, isn+1, true, tsval, base.Add(8*tick)), ReasonBadHash},
		{"one tick ahead", check(tuple4, cISN+1, isn+1, true, tsval, base.Add(-1)), ReasonFuture},
		{"timestamp dropped", check(tuple4, cISN+1, isn+1, false, 0, base), ReasonAckMismatch},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}

	// MaxAge widens the window.
	j3 := mustJar(t, testSecret, Config{MaxAge: 3, Rotation: 24 * time.Hour})
	isn3, _, _ := j3.Make(tuple6, cISN, flow.SynOptions{MSS: 1440, WScale: flow.NoWScale}, 0, base)
	if r := check3(j3, isn3, base.Add(4*tick-1)); r != ReasonOK {
		t.Errorf("MaxAge 3, 3 ticks old: %v", r)
	}
	if r := check3(j3, isn3, base.Add(4*tick)); r != ReasonExpired {
		t.Errorf("MaxAge 3, 4 ticks old: %v", r)
	}
}

func check3(j *Jar, isn uint32, now time.Time) Reason {
	_, r := j.Check(tuple6, 0x12345679, isn+1, false, 0, now)
	return r
}

// Rewriting the option bits in TSecr must be caught, except with the tag's
// guessing probability 2^-8 per attempt.
func TestBadTSOptions(t *testing.T) {
	j := mustJar(t, testSecret, Config{})
	r := rand.New(rand.NewPCG(3, 4))
	var bad, passed, other int
	for range 300 {
		tu := randTuple(r, r.IntN(2) == 0)
		syn := randSyn(r)
		syn.Timestamps = true
		isn, tsval, _ := j.Make(tu, 41, syn, r.Uint32(), base)
		for flip := uint32(1); flip < 64; flip++ {
			switch _, reason := j.Check(tu, 42, isn+1, true, tsval^flip, base); reason {
			case ReasonBadTSOptions:
				bad++
			case ReasonOK:
				passed++
			default:
				other++
				t.Errorf("flip %#x: %v", flip, reason)
			}
		}
	}
	trials := bad + passed + other
	expect := float64(trials) / 256
	t.Logf("%d rewritten TSecr: %d bad_ts_options, %d passed (expected about %.0f at 2^-8)", trials, bad, passed, expect)
	if float64(passed) > 1.5*expect+20 {
		t.Fatalf("%d rewritten option bits passed, expected about %.0f", passed, expect)
	}
}

// A timestamp on the ACK of a handshake whose SYN had none is not something
// a conforming client sends; it must not be accepted as if negotiated.
func TestTimestampNotNegotiated(t *testing.T) {
	j := mustJar(t, testSecret, Config{})
	syn := flow.SynOptions{MSS: 1460, WScale: 7, SACK: true}
	isn, tsval, _ := j.Make(tuple4, 9, syn, 12345, base)
	if tsval != 0 {
		t.Fatalf("tsval %d for a SYN without timestamps", tsval)
	}
	if got, reason := j.Check(tuple4, 10, isn+1, false, 0, base); reason != ReasonOK || got != (flow.SynOptions{MSS: 1460, WScale: flow.NoWScale}) {
		t.Fatalf("plain ACK: %v %+v", reason, got)
	}
	var bad int
	for tsecr := range uint32(64) {
		if _, reason := j.Check(tuple4, 10, isn+1, true, tsecr, base); reason == ReasonBadTSOptions {
			bad++
		} else if reason != ReasonOK {
			t.Errorf("tsecr %#x: %v", tsecr, reason)
		}
	}
	if bad < 56 { // each of 64 passes the 8-bit tag with probability 2^-8
		t.Fatalf("only %d of 64 timestamped ACKs rejected", bad)
	}
}

func TestKeyRotationOverlap(t *testing.T) {
	cfg := Config{Tick: time.Second, MaxAge: 6, Rotation: 2 * time.Second}
	epochStart := time.Unix(1_700_000_000, 0) // even: an epoch boundary
	made := epochStart.Add(500 * time.Millisecond)
	inNext := epochStart.Add(2500 * time.Millisecond)     // epoch e+1, 2 ticks later
	inNextNext := epochStart.Add(4500 * time.Millisecond) // epoch e+2, 4 ticks later

	j := mustJar(t, testSecret, cfg)
	isn, _, _ := j.Make(tuple4, 1000, flow.SynOptions{MSS: 1460}, 0, made)
	if _, r := j.Check(tuple4, 1001, isn+1, false, 0, inNext); r != ReasonOK {
		t.Errorf("epoch e+1: %v, want ok", r)
	}
	if _, r := j.Check(tuple4, 1001, isn+1, false, 0, inNextNext); r != ReasonBadHash {
		t.Errorf("epoch e+2: %v, want bad_hash", r)
	}
	// Keys never move backwards: a stale now after rotation does not revive e.
	if _, r := j.Check(tuple4, 1001, isn+1, false, 0, inNext); r != ReasonBadHash {
		t.Errorf("epoch e+1 after rotating to e+2: %v, want bad_hash", r)
	}

	// Explicit Rotate, and Make with a now one epoch stale: it must sign with
	// that epoch's key, which a fresh jar at that time accepts.
	j2 := mustJar(t, testSecret, cfg)
	j2.Rotate(inNext)
	isn2, _, _ := j2.Make(tuple4, 2000, flow.SynOptions{MSS: 1460}, 0, made)
	fresh := mustJar(t, testSecret, cfg)
	if _, r := fresh.Check(tuple4, 2001, isn2+1, false, 0, made); r != ReasonOK {
		t.Errorf("cookie minted with a stale now: %v, want ok", r)
	}
}

// Make and Check race with Rotate; every cookie must validate while the
// keys move from epoch e to e+1 underneath.
func TestConcurrentRotation(t *testing.T) {
	cfg := Config{Tick: time.Second, MaxAge: 6, Rotation: 2 * time.Second}
	epochStart := time.Unix(1_700_000_000, 0)
	j := mustJar(t, testSecret, cfg)
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			j.Rotate(epochStart.Add(time.Duration(i%4000) * time.Millisecond))
		}
	}()
	var failures atomic.Int64
	var workers sync.WaitGroup
	for w := range 4 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for range 20000 {
				tu := randTuple(r, r.IntN(2) == 0)
				now := epochStart.Add(time.Duration(r.Int64N(int64(4 * time.Second))))
				isn, tsval, _ := j.Make(tu, 5, flow.SynOptions{Timestamps: true, WScale: 3}, 100000, now)
				if _, reason := j.Check(tu, 6, isn+1, true, tsval, now); reason != ReasonOK {
					failures.Add(1)
				}
			}
		}()
	}
	workers.Wait()
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d cookies failed to validate during rotation", n)
	}
}

func TestSharedSecret(t *testing.T) {
	a := mustJar(t, testSecret, Config{})
	b := mustJar(t, append([]byte(nil), testSecret...), Config{})
	other := mustJar(t, []byte("another secret, also 32 bytes..."), Config{})
	r := rand.New(rand.NewPCG(5, 6))
	for range 1000 {
		tu := randTuple(r, r.IntN(2) == 0)
		syn := randSyn(r)
		isn, tsval, mss := a.Make(tu, 77, syn, r.Uint32(), base)
		got, reason := b.Check(tu, 78, isn+1, syn.Timestamps, tsval, base.Add(time.Minute))
		if want := wantOptions(syn, mss, tsval); reason != ReasonOK || got != want {
			t.Fatalf("gateway b: %v %+v, want ok %+v", reason, got, want)
		}
		if _, reason := other.Check(tu, 78, isn+1, syn.Timestamps, tsval, base); reason == ReasonOK {
			t.Fatalf("a jar with another secret accepted the cookie")
		}
	}
}

// TestForgery throws random ACKs at one tuple and compares the accepted
// count with what the 27 bits of auth+tag predict.
func TestForgery(t *testing.T) {
	n := 10_000_000
	if testing.Short() {
		n = 1_000_000
	}
	j := mustJar(t, testSecret, Config{})
	now := base.Add(17 * time.Second)
	workers := runtime.GOMAXPROCS(0)
	var counts [numReasons]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 0xf04e))
			var local [numReasons]int64
			for range n / workers {
				_, reason := j.Check(tuple4, r.Uint32(), r.Uint32(), false, 0, now)
				local[reason]++
			}
			for i, c := range local {
				counts[i].Add(c)
			}
		}()
	}
	wg.Wait()
	total := float64(n / workers * workers)
	// A random ack has a usable tick with probability (MaxAge+1)/8, then
	// matches auth+tag under one of two keys with probability 2 * 2^-27.
	expected := total * float64(DefaultMaxAge+1) / 8 * 2 / (1 << 27)
	accepted := counts[ReasonOK].Load()
	t.Logf("%.0f random ACKs: %d accepted, expected %.3f (2^-28 each)", total, accepted, expected)
	// auth alone (19 bits, two keys) passes about 2^-18 of them; those end as
	// ack_mismatch (wrong tag), or expired/future if the tag matches too.
	mismatch, expMismatch := counts[ReasonAckMismatch].Load(), total*2/(1<<authBits)*255/256
	t.Logf("ack_mismatch %d (expected ~%.1f), expired %d, future %d, bad_hash %d",
		mismatch, expMismatch,
		counts[ReasonExpired].Load(), counts[ReasonFuture].Load(), counts[ReasonBadHash].Load())
	if limit := 10*expected + 3; float64(accepted) > limit {
		t.Fatalf("%d forged ACKs accepted, more than %.1f", accepted, limit)
	}
	// auth is checked on its own, so its 19 bits can be measured too.
	if limit := 3*expMismatch + 10; float64(mismatch) > limit {
		t.Fatalf("%d forged ACKs matched auth, more than %.1f: auth is weaker than %d bits", mismatch, limit, authBits)
	}
}

func TestNewJarValidation(t *testing.T) {
	if _, err := NewJar(make([]byte, MinSecretLen-1), Config{}); !errors.Is(err, ErrSecretTooShort) {
		t.Errorf("short secret: %v", err)
	}
	for _, cfg := range []Config{
		{MaxAge: MaxMaxAge + 1}, {MaxAge: -1}, {Tick: -time.Second}, {Tick: time.Microsecond},
		{Rotation: -time.Minute},
	} {
		if _, err := NewJar(testSecret, cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", cfg, err)
		}
	}
	j := mustJar(t, testSecret, Config{})
	if got := j.Lifetime(); got != 128*time.Second {
		t.Errorf("default lifetime %v, want 128s", got)
	}
}

// The secret is copied: a caller scribbling over its slice changes nothing.
func TestNewJarCopiesSecret(t *testing.T) {
	s := append([]byte(nil), testSecret...)
	j := mustJar(t, s, Config{})
	isn, _, _ := j.Make(tuple4, 1, flow.SynOptions{}, 0, base)
	clear(s)
	if _, r := j.Check(tuple4, 2, isn+1, false, 0, base); r != ReasonOK {
		t.Fatalf("after clearing the caller's secret: %v", r)
	}
}

func TestReasonStrings(t *testing.T) {
	label := regexp.MustCompile(`^[a-z][a-z_]*$`)
	seen := map[string]bool{}
	rs := Reasons()
	if len(rs) != int(numReasons) {
		t.Fatalf("Reasons() has %d entries, want %d", len(rs), numReasons)
	}
	for _, r := range rs {
		s := r.String()
		if !label.MatchString(s) || seen[s] || s == "unknown" {
			t.Errorf("reason %d: label %q invalid or duplicate", r, s)
		}
		seen[s] = true
	}
	if s := Reason(200).String(); s != "unknown" {
		t.Errorf("out of range reason: %q", s)
	}
}

func TestNoAllocs(t *testing.T) {
	j := mustJar(t, testSecret, Config{})
	j.Rotate(base)
	syn := flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}
	for _, tu := range []flow.Tuple{tuple4, tuple6} {
		var isn, tsval uint32
		if n := testing.AllocsPerRun(100, func() { isn, tsval, _ = j.Make(tu, 1, syn, 5000, base) }); n != 0 {
			t.Errorf("Make %v: %v allocs", tu, n)
		}
		if n := testing.AllocsPerRun(100, func() { j.Check(tu, 2, isn+1, true, tsval, base) }); n != 0 {
			t.Errorf("Check %v: %v allocs", tu, n)
		}
	}
}

var benchTuples = []struct {
	name string
	tu   flow.Tuple
}{{"v4", tuple4}, {"v6", tuple6}}

func BenchmarkMake(b *testing.B) {
	j := mustJar(b, testSecret, Config{})
	syn := flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}
	for _, bt := range benchTuples {
		name, tu := bt.name, bt.tu
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var sink uint32
			for i := 0; b.Loop(); i++ {
				isn, _, _ := j.Make(tu, uint32(i), syn, uint32(i), base)
				sink ^= isn
			}
			_ = sink
		})
	}
}

func BenchmarkCheck(b *testing.B) {
	j := mustJar(b, testSecret, Config{})
	syn := flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}
	for _, bt := range benchTuples {
		name, tu := bt.name, bt.tu
		isn, tsval, _ := j.Make(tu, 1, syn, 5000, base)
		b.Run(name+"/valid", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, r := j.Check(tu, 2, isn+1, true, tsval, base); r != ReasonOK {
					b.Fatal(r)
				}
			}
		})
		b.Run(name+"/forged", func(b *testing.B) {
			b.ReportAllocs()
			for i := uint32(0); b.Loop(); i++ {
				j.Check(tu, 2, isn+i*0x9e3779b9, true, tsval, base)
			}
		})
	}
}
