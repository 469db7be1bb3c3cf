// Package queue is syngate's listen path: the half-open (SYN) queue and the
// accept queue of one protected service, with the decisions Linux takes in
// tcp_conn_request and tcp_check_req, minus packet I/O and cookie arithmetic.
//
// One Listener serves one service. Receive loops call OnSYN for every SYN
// and OnACK for every handshake ACK, and act on the returned decision (send a
// SYN-ACK with the given ISN, send a cookie SYN-ACK, check a cookie, send a
// RST, or drop). A housekeeping loop calls Expire about once a second to
// retransmit SYN-ACKs and time out half-open entries, and backend workers
// take validated connections from the accept queue:
//
//	l, err := queue.NewListener(queue.DefaultConfig())
//	if err != nil { ... }
//	// receive loop
//	d := l.OnSYN(queue.SYN{Tuple: t, ISN: seq, Options: opts, MSS: 1460}, time.Now(), randomISN)
//	switch d.Action {
//	case queue.SynQueued, queue.SynResend:
//		sendSynAck(t, d.OurISN, seq+1, d.MSS)
//	case queue.SynCookie:
//		sendSynAck(t, cookieISN(t, seq, opts), seq+1, mss)
//	}
//	a := l.OnACK(t, seq, ack, payload, time.Now())
//	if a.Action == queue.AckNoEntry && a.CookieCheckAllowed {
//		if c, ok := checkCookie(t, seq, ack); ok {
//			if l.Accept(c, time.Now()) == queue.AcceptReset { sendRST(t) }
//		}
//	}
//	// housekeeping loop, once a second
//	l.Expire(time.Now(), func(e queue.Timeout) {
//		if !e.Dropped { sendSynAck(e.Tuple, e.OurISN, e.ClientISN+1, e.MSS) }
//	})
//	// backend worker
//	c, err := l.Wait(ctx)
//
// Time is never read inside the package: every method takes now, so tests
// drive the clock and the timers deterministically. All memory is allocated
// by NewListener; the per-packet methods are O(1) and do not allocate.
// Methods are safe for concurrent use: the half-open queue is split into
// shards locked separately, picked by a keyed hash of the tuple, so receive
// queues rarely contend and a client cannot choose which shard it fills.
package queue
