package proxy

import "github.com/syngate/syngate/packet"

// heldAcks reports whether the first held client segment, sent on to the
// backend as it is, also completes the backend handshake, so the splice
// needs no separate ACK: one packet (and one send, and one segment for the
// backend to process) fewer per connection whose client spoke first. It
// must start at the client's first byte and acknowledge exactly our
// SYN-ACK (toBackend turns that into the backend's ISN+1), carry
// timestamps when the leg has them (its TSecr then echoes the backend's
// SYN-ACK, as the ACK's would), and no PROXY header may go first. Linux,
// and any TCP, accepts data on the segment that completes a handshake.
// c.mu is held.
func (c *conn) heldAcks(ts bool) bool {
	if len(c.header) > 0 || len(c.held) == 0 {
		return false
	}
	h := c.held[0]
	return len(h.data) > 0 && h.seq == c.clientISN+1 && h.ack == c.ourISN+1 &&
		packet.Flags(h.flags)&(packet.ACK|packet.SYN|packet.RST) == packet.ACK && (!ts || h.ts)
}
