package queue

// Stats is a snapshot of a listener's counters, named after the Linux MIB
// counters they mirror where there is one. Counters only grow; the two
// lengths are read from the queues themselves.
type Stats struct {
	SynReceived       uint64 // every SYN passed to OnSYN
	SynQueued         uint64 // half-open entries created or replaced (SYN-ACK sent)
	SynReplaced       uint64 // of SynQueued, entries replaced by a SYN with a new ISN
	SynResent         uint64 // retransmitted SYNs answered with the same SYN-ACK
	SynResendLimited  uint64 // retransmitted SYNs ignored by the resend rate limit
	CookiesSent       uint64 // SYNs answered with a cookie, for any reason
	CookiesOverflow   uint64 // of CookiesSent, because the queue was full (TCPReqQFullDoCookies)
	SynDropsQueueFull uint64 // SYNs dropped: queue full, cookies off (TCPReqQFullDrop)
	// SynDropsAcceptFull counts SYNs dropped because the accept queue was
	// full (ListenOverflows and ListenDrops at SYN time).
	SynDropsAcceptFull uint64
	Retransmits        uint64 // SYN-ACKs retransmitted by the timer (TCPSynRetrans)
	Timeouts           uint64 // half-open entries dropped after the last retransmission
	AckMatched         uint64 // ACKs that completed a half-open entry
	AckUnmatched       uint64 // ACKs for tuples without a half-open entry
	AckCookieDenied    uint64 // of AckUnmatched, refused a cookie check by the gate
	AckPeerChecks      uint64 // of AckUnmatched, checked as a peer's cookie with the gate closed
	AckBadAck          uint64 // ACKs for an entry with the wrong ACK number
	AckBadSeq          uint64 // ACKs for an entry with the wrong sequence number
	// AcceptOverflowDrops and AcceptOverflowResets count valid handshakes
	// refused by a full accept queue (ListenOverflows), ignored or reset.
	AcceptOverflowDrops  uint64
	AcceptOverflowResets uint64
	Accepted             uint64 // connections put on the accept queue
	SynQueueLen          int    // current half-open entries
	AcceptQueueLen       int    // current connections awaiting a backend
}

// Stats sums the counters. Each counter is read atomically, the set is not:
// under load the fields may be a few events apart.
func (l *Listener) Stats() Stats {
	var s Stats
	for i := range l.shards {
		c := &l.shards[i].stats
		s.SynReceived += c.synReceived.Load()
		s.SynQueued += c.synQueued.Load()
		s.SynReplaced += c.synReplaced.Load()
		s.SynResent += c.synResent.Load()
		s.SynResendLimited += c.synResendLimited.Load()
		s.CookiesSent += c.cookiesSent.Load()
		s.CookiesOverflow += c.cookiesOverflow.Load()
		s.SynDropsQueueFull += c.synQueueFullDrops.Load()
		s.SynDropsAcceptFull += c.synAcceptFullDrops.Load()
		s.Retransmits += c.retransmits.Load()
		s.Timeouts += c.timeouts.Load()
		s.AckMatched += c.ackMatched.Load()
		s.AckUnmatched += c.ackUnmatched.Load()
		s.AckCookieDenied += c.ackCookieDenied.Load()
		s.AckPeerChecks += c.ackPeerChecks.Load()
		s.AckBadAck += c.ackBadAck.Load()
		s.AckBadSeq += c.ackBadSeq.Load()
	}
	s.AcceptOverflowDrops = l.accept.overflowDrops.Load()
	s.AcceptOverflowResets = l.accept.overflowResets.Load()
	s.Accepted = l.accept.accepted.Load()
	s.SynQueueLen = l.SynQueueLen()
	s.AcceptQueueLen = l.AcceptQueueLen()
	return s
}
