package cookie

import (
	"encoding/binary"
	"math/bits"
)

// sipKey is a 128-bit SipHash key as two little-endian words.
type sipKey struct{ k0, k1 uint64 }

// The SipHash initialisation constants ("somepseudorandomlygeneratedbytes").
const (
	sipC0 = 0x736f6d6570736575
	sipC1 = 0x646f72616e646f6d
	sipC2 = 0x6c7967656e657261
	sipC3 = 0x7465646279746573
)

// sipRound is one SipRound. The lanes are passed by value so the compiler
// inlines it and keeps all four in registers.
func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13) ^ v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16) ^ v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21) ^ v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17) ^ v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}

// sipFinalize runs d = 4 rounds and folds the lanes into the output.
func sipFinalize(v0, v1, v2, v3 uint64) uint64 {
	v2 ^= 0xff
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	return v0 ^ v1 ^ v2 ^ v3
}

// sipHash24 is SipHash-2-4 over an arbitrary byte string. The cookie path
// uses the fixed-size sipHash6 instead; this general form exists so tests
// can pin both against the reference vectors.
func sipHash24(k sipKey, msg []byte) uint64 {
	v0, v1, v2, v3 := k.k0^sipC0, k.k1^sipC1, k.k0^sipC2, k.k1^sipC3
	n := len(msg)
	for len(msg) >= 8 {
		m := binary.LittleEndian.Uint64(msg)
		v3 ^= m
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0 ^= m
		msg = msg[8:]
	}
	last := uint64(n&0xff) << 56
	for i, c := range msg {
		last |= uint64(c) << (8 * i)
	}
	v3 ^= last
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= last
	return sipFinalize(v0, v1, v2, v3)
}

// sipHash6 is SipHash-2-4 specialised to a 48-byte message given as six
// little-endian words: identical output to sipHash24 over those bytes, but
// without a slice, so it stays on the stack.
func sipHash6(k sipKey, m0, m1, m2, m3, m4, m5 uint64) uint64 {
	v0, v1, v2, v3 := k.k0^sipC0, k.k1^sipC1, k.k0^sipC2, k.k1^sipC3
	// The seventh word is the final block: no tail bytes, length 48 on top.
	for _, m := range [7]uint64{m0, m1, m2, m3, m4, m5, 48 << 56} {
		v3 ^= m
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3) // c = 2 rounds per word
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0 ^= m
	}
	return sipFinalize(v0, v1, v2, v3)
}
