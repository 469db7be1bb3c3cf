package proxy

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// MaglevSize is the number of entries of a Maglev lookup table: a prime
// (the paper requires one, so every skip walks the whole table) well
// above 100 x the largest pool, which keeps each backend's share within
// about 1% of its weight. 65537 entries of 2 bytes: 128 KiB per service.
const MaglevSize = 65537

// maglevEntry is one backend as the table is built from it: its name
// (what the permutation hashes) and its weight.
type maglevEntry struct {
	addr   netip.AddrPort
	weight int
}

// maglev is a Maglev lookup table (Eisenbud et al., NSDI 2016): entry i
// holds the index of the backend that owns hash values congruent to i.
// Every backend fills the table in its own pseudo-random order (its
// permutation, from an offset and a skip hashed from its address), taking
// turns in proportion to its weight; removing a backend hands only its
// entries to the others, so about 1/N of the clients move.
type maglev struct {
	table []uint16 // index into the entries the table was built from
}

// newMaglev builds the table over entries, of which at least one has a
// weight above 0; entries of weight 0 get no entry. The result depends
// only on the entries' addresses and weights, never on their order or
// the process: two gateways with the same pool build the same table.
func newMaglev(entries []maglevEntry) *maglev {
	const m = MaglevSize
	// Turns are taken in address order, whatever order the caller has:
	// the contested entries must go the same way on every gateway.
	order := make([]int, len(entries))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return entries[a].addr.Compare(entries[b].addr) })
	n := len(entries)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	credit := make([]int, n)
	maxW := 0
	for i, e := range entries {
		h1, h2 := addrHashes(e.addr)
		offset[i] = h1 % m
		skip[i] = h2%(m-1) + 1
		maxW = max(maxW, e.weight)
	}
	if maxW == 0 {
		return nil
	}
	t := &maglev{table: make([]uint16, m)}
	filled := make([]bool, m)
	for left := m; left > 0; {
		for _, i := range order {
			e := entries[i]
			// Weighted turns: a backend of weight w takes w turns for
			// every maxW turns of the heaviest one.
			credit[i] += e.weight
			if credit[i] < maxW {
				continue
			}
			credit[i] -= maxW
			c := (offset[i] + next[i]*skip[i]) % m
			for filled[c] {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % m
			}
			filled[c] = true
			t.table[c] = uint16(i)
			next[i]++
			if left--; left == 0 {
				break
			}
		}
	}
	return t
}

// lookup returns the index of the backend that owns hash h.
func (t *maglev) lookup(h uint64) int { return int(t.table[h%MaglevSize]) }

// addrHashes are the two independent hashes of a backend's address that
// give its permutation's offset and skip.
func addrHashes(a netip.AddrPort) (uint64, uint64) {
	var b [18]byte
	ip := a.Addr().As16()
	copy(b[:], ip[:])
	binary.BigEndian.PutUint16(b[16:], a.Port())
	return hash64(b[:], 0x5f3759df), hash64(b[:], 0x2545f4914f6cdd1d)
}

// clientHash is what a new connection's backend is chosen by: the
// client's address, and its port when withPort. Fixed seeds: every
// gateway hashes a client alike.
func clientHash(client netip.AddrPort, withPort bool) uint64 {
	var b [18]byte
	ip := client.Addr().Unmap().As16()
	copy(b[:], ip[:])
	n := 16
	if withPort {
		binary.BigEndian.PutUint16(b[16:], client.Port())
		n = 18
	}
	return hash64(b[:n], 0x9e3779b97f4a7c15)
}

// hash64 is FNV-1a over b, started from seed, with murmur3's finalizer:
// FNV alone leaves the low bits, which the modulo reads, poorly mixed
// for inputs that differ only in their last bytes (ports, host parts).
func hash64(b []byte, seed uint64) uint64 {
	h := uint64(14695981039346656037) ^ seed
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
