package cookie

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
)

// dataplaneMint is a second, byte-oriented implementation of minting from
// a DataplaneKey alone, written from the package doc the way the XDP
// program must do it: the 48-byte message, the ISN and TSval layouts, the
// MSS tables. If it agrees with Make, the key is all a minter needs.
func dataplaneMint(k DataplaneKey, t flow.Tuple, clientISN uint32, syn flow.SynOptions, clock uint32) (isn, tsval uint32) {
	tables := map[bool][4]uint16{false: {536, 1300, 1440, 1460}, true: {1220, 1420, 1440, 8940}}
	table := tables[t.Is6()]
	idx := uint32(0)
	for i := 3; i > 0; i-- {
		if syn.MSS >= table[i] {
			idx = uint32(i)
			break
		}
	}
	var msg [48]byte
	c, s := t.Client.Addr().As16(), t.Service.Addr().As16()
	// The hash reads each 8 bytes as one little-endian word whose value is
	// the big-endian reading of the addresses: byte-reverse each word.
	word := func(off int, v uint64) { binary.LittleEndian.PutUint64(msg[off:], v) }
	word(0, binary.BigEndian.Uint64(c[0:]))
	word(8, binary.BigEndian.Uint64(c[8:]))
	word(16, binary.BigEndian.Uint64(s[0:]))
	word(24, binary.BigEndian.Uint64(s[8:]))
	word(32, uint64(t.Client.Port())<<48|uint64(t.Service.Port())<<32|uint64(clientISN))
	word(40, uint64(k.Tick)<<8|uint64(idx))
	h := sipHash24(sipKey{k.K0, k.K1}, msg[:])

	var in uint64
	if syn.Timestamps {
		opts := uint32(0xf)
		if syn.HasWScale() {
			opts = uint32(min(syn.WScale, 14))
		}
		if syn.SACK {
			opts |= 1 << 4
		}
		if syn.ECN {
			opts |= 1 << 5
		}
		in = 64 | uint64(opts)
		tsval = clock&^63 | opts
		if int32(tsval-clock) > 0 {
			tsval -= 64
		}
	}
	a, b := h>>19&(1<<22-1), h>>41&(1<<22-1)
	tag := uint32((a*in+b)&(1<<22-1)) >> 14
	isn = uint32(k.Tick&7)<<29 | idx<<27 | uint32(h&(1<<19-1))<<8 | tag
	return isn, tsval
}

func TestDataplaneKeyMintsWhatMakeMints(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 9))
	for _, cfg := range []Config{{}, {Tick: time.Second, MaxAge: 3, Rotation: 5 * time.Second}} {
		j := mustJar(t, testSecret, cfg)
		for i := range 5000 {
			now := base.Add(time.Duration(r.Int64N(int64(1000 * time.Hour))))
			k := j.DataplaneKey(now)
			tu := randTuple(r, i%2 == 0)
			isn, syn, clock := r.Uint32(), randSyn(r), r.Uint32()
			wantISN, wantTS, _ := j.Make(tu, isn, syn, clock, now)
			gotISN, gotTS := dataplaneMint(k, tu, isn, syn, clock)
			if gotISN != wantISN || gotTS != wantTS {
				t.Fatalf("%v syn %+v: dataplane minted %#x/%d, Make %#x/%d", tu, syn, gotISN, gotTS, wantISN, wantTS)
			}
			if _, reason := j.Check(tu, isn+1, gotISN+1, syn.Timestamps, gotTS, now); reason != ReasonOK {
				t.Fatalf("Check: %v", reason)
			}
		}
	}
}

func TestDataplaneKeyExpires(t *testing.T) {
	j := mustJar(t, testSecret, Config{Tick: 10 * time.Second, MaxAge: 1, Rotation: 25 * time.Second})
	for _, tc := range []struct {
		now, expires int64 // seconds
		tick, epoch  int64
	}{
		{0, 10, 0, 0},
		{9, 10, 0, 0},
		{10, 20, 1, 0},
		{21, 25, 2, 0},
		{25, 30, 2, 1},
		{-1, 0, -1, -1},
	} {
		k := j.DataplaneKey(time.Unix(tc.now, 0))
		if k.Tick != tc.tick || k.Epoch != tc.epoch || !k.Expires.Equal(time.Unix(tc.expires, 0)) {
			t.Errorf("at %ds: tick %d epoch %d expires %v, want %d %d %ds", tc.now, k.Tick, k.Epoch, k.Expires.Unix(), tc.tick, tc.epoch, tc.expires)
		}
		// The key is that of the epoch: it changes exactly when Epoch does.
		if k2 := j.DataplaneKey(time.Unix(tc.now, 0).Add(time.Nanosecond)); k2.Epoch == k.Epoch && (k2.K0 != k.K0 || k2.K1 != k.K1) {
			t.Errorf("at %ds: key changed within an epoch", tc.now)
		}
	}
	a, b := j.DataplaneKey(time.Unix(0, 0)), j.DataplaneKey(time.Unix(30, 0))
	if a.K0 == b.K0 && a.K1 == b.K1 {
		t.Error("key did not change with the epoch")
	}
}

func TestDataplaneKeyNeverPrinted(t *testing.T) {
	j := mustJar(t, testSecret, Config{})
	k := j.DataplaneKey(base)
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("key", "k", k)
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("key", "k", k)
	out := fmt.Sprintf("%v %+v %#v %s %d", k, k, k, k, k.Epoch) + sb.String()
	for _, w := range []uint64{k.K0, k.K1} {
		for _, form := range []string{fmt.Sprint(w), fmt.Sprintf("%x", w), fmt.Sprintf("%X", w)} {
			if strings.Contains(out, form) {
				t.Fatalf("key word %s printed:\n%s", form, out)
			}
		}
	}
	if !strings.Contains(out, fmt.Sprint(k.Tick)) {
		t.Fatalf("tick missing from %s", out)
	}
}
