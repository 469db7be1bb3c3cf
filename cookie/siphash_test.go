package cookie

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"testing"
)

// sipVectors are the SipHash-2-4 64-bit reference outputs from the SipHash
// paper (Aumasson, Bernstein), appendix / vectors.h: key 00 01 .. 0f, message
// i bytes 00 01 .. i-1, output as little-endian bytes.
var sipVectors = [64]string{
	"310e0edd47db6f72", "fd67dc93c539f874", "5a4fa9d909806c0d", "2d7efbd796666785",
	"b7877127e09427cf", "8da699cd64557618", "cee3fe586e46c9cb", "37d1018bf50002ab",
	"6224939a79f5f593", "b0e4a90bdf82009e", "f3b9dd94c5bb5d7a", "a7ad6b22462fb3f4",
	"fbe50e86bc8f1e75", "903d84c02756ea14", "eef27a8e90ca23f7", "e545be4961ca29a1",
	"db9bc2577fcc2a3f", "9447be2cf5e99a69", "9cd38d96f0b3c14b", "bd6179a71dc96dbb",
	"98eea21af25cd6be", "c7673b2eb0cbf2d0", "883ea3e395675393", "c8ce5ccd8c030ca8",
	"94af49f6c650adb8", "eab8858ade92e1bc", "f315bb5bb835d817", "adcf6b0763612e2f",
	"a5c91da7acaa4dde", "716595876650a2a6", "28ef495c53a387ad", "42c341d8fa92d832",
	"ce7cf2722f512771", "e37859f94623f3a7", "381205bb1ab0e012", "ae97a10fd434e015",
	"b4a31508beff4d31", "81396229f0907902", "4d0cf49ee5d4dcca", "5c73336a76d8bf9a",
	"d0a704536ba93e0e", "925958fcd6420cad", "a915c29bc8067318", "952b79f3bc0aa6d4",
	"f21df2e41d4535f9", "87577519048f53a9", "10a56cf5dfcd9adb", "eb75095ccd986cd0",
	"51a9cb9ecba312e6", "96afadfc2ce666c7", "72fe52975a4364ee", "5a1645b276d592a1",
	"b274cb8ebf87870a", "6f9bb4203de7b381", "eaecb2a30b22a87f", "9924a43cc1315724",
	"bd838d3aafbf8db7", "0b1a2a3265d51aea", "135079a3231ce660", "932b2846e4d70666",
	"e1915f5cb1eca46c", "f325965ca16d629f", "575ff28e60381be5", "724506eb4c328a95",
}

var refKey = sipKey{k0: 0x0706050403020100, k1: 0x0f0e0d0c0b0a0908}

func TestSipHashReferenceVectors(t *testing.T) {
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = byte(i)
	}
	for n, want := range sipVectors {
		raw, err := hex.DecodeString(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := sipHash24(refKey, msg[:n]); got != binary.LittleEndian.Uint64(raw) {
			t.Errorf("len %d: got %016x, want %s (LE bytes)", n, got, want)
		}
	}
}

// The paper's worked example: 15-byte message 00..0e.
func TestSipHashPaperExample(t *testing.T) {
	msg := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
	if got, want := sipHash24(refKey, msg), uint64(0xa129ca6149be45e5); got != want {
		t.Fatalf("got %016x, want %016x", got, want)
	}
}

// sipHash6 must be exactly SipHash-2-4 over the 48 little-endian bytes of
// its words, including on the reference vector of length 48.
func TestSipHash6MatchesGeneral(t *testing.T) {
	var msg [48]byte
	for i := range msg {
		msg[i] = byte(i)
	}
	w := func(i int) uint64 { return binary.LittleEndian.Uint64(msg[8*i:]) }
	raw, _ := hex.DecodeString(sipVectors[48])
	if got := sipHash6(refKey, w(0), w(1), w(2), w(3), w(4), w(5)); got != binary.LittleEndian.Uint64(raw) {
		t.Fatalf("reference length 48: got %016x, want %s", got, sipVectors[48])
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		k := sipKey{r.Uint64(), r.Uint64()}
		var m [6]uint64
		for i := range m {
			m[i] = r.Uint64()
			binary.LittleEndian.PutUint64(msg[8*i:], m[i])
		}
		if a, b := sipHash6(k, m[0], m[1], m[2], m[3], m[4], m[5]), sipHash24(k, msg[:]); a != b {
			t.Fatalf("key %x msg %x: specialised %016x, general %016x", k, msg, a, b)
		}
	}
}
