package packet

import "errors"

// Parse and the builders return these sentinels unwrapped, so that the hot
// path does not allocate; callers branch with errors.Is or ==.
var (
	// ErrTruncated: the frame ends before a header does, or before the
	// length the IP header announces.
	ErrTruncated = errors.New("packet: truncated")
	// ErrNotIP: the EtherType is neither IPv4, IPv6 nor a single 802.1Q tag
	// in front of one of them (QinQ is not supported).
	ErrNotIP = errors.New("packet: not ipv4 or ipv6")
	// ErrBadVersion: the IP version nibble disagrees with the EtherType.
	ErrBadVersion = errors.New("packet: ip version does not match ethertype")
	// ErrBadIHL: an IPv4 header length below 5 words.
	ErrBadIHL = errors.New("packet: bad ipv4 header length")
	// ErrBadLength: the IP length field is impossible (IPv4 total length
	// below its header length, IPv6 payload length zero as in jumbograms).
	ErrBadLength = errors.New("packet: bad ip length")
	// ErrFragment: an IPv4 fragment or an IPv6 fragment header; the TCP
	// header may be absent or split, so the gateway does not look further.
	ErrFragment = errors.New("packet: ip fragment")
	// ErrExtHeader: an IPv6 extension header chain that is too long (more
	// than MaxExtHeaders) or has hop-by-hop anywhere but first.
	ErrExtHeader = errors.New("packet: bad ipv6 extension header chain")
	// ErrMappedAddress: an IPv6 header with an IPv4-mapped source or
	// destination, which RFC 4291 section 2.5.5.2 keeps off the wire and
	// Linux drops; accepting it would let one connection pass for IPv4.
	ErrMappedAddress = errors.New("packet: ipv4-mapped address in ipv6 header")
	// ErrNotTCP: the IP payload is not TCP.
	ErrNotTCP = errors.New("packet: not tcp")
	// ErrBadDataOffset: a TCP data offset below 5 words or past the end of
	// the IP datagram.
	ErrBadDataOffset = errors.New("packet: bad tcp data offset")
	// ErrBadOption: a TCP option whose length is below 2, runs past the
	// header, or is wrong for its kind (MSS, window scale, SACK-permitted,
	// SACK, timestamps).
	ErrBadOption = errors.New("packet: bad tcp option")
	// ErrBadChecksum: VerifyChecksums found a wrong IPv4 header or TCP
	// checksum.
	ErrBadChecksum = errors.New("packet: bad checksum")

	// ErrShortBuffer: the destination buffer's capacity cannot hold the
	// frame to build.
	ErrShortBuffer = errors.New("packet: destination buffer too small")
	// ErrAddrFamily: source and destination are not both valid IPv4 or both
	// valid IPv6 addresses.
	ErrAddrFamily = errors.New("packet: source and destination address families differ")
	// ErrTooLarge: the IP datagram would exceed 65535 bytes.
	ErrTooLarge = errors.New("packet: datagram too large")
	// ErrResetForReset: BuildRST was asked to answer a reset, which RFC 793
	// forbids (two gateways would otherwise ping-pong resets).
	ErrResetForReset = errors.New("packet: no reset in reply to a reset")
)
