package queue

import (
	"testing"
	"time"

	"github.com/syngate/syngate/spec"
)

// FuzzListener applies an arbitrary sequence of SYNs, ACKs, cookie
// accepts, pops and timer runs to a small listener and checks after each
// step that the structures agree and the bounds hold.
func FuzzListener(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 1, 1, 0, 0, 4, 0, 0, 30})
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 4, 0, 0, 200, 4, 0, 0, 200})
	f.Add([]byte{0, 1, 1, 0, 0, 1, 2, 0, 1, 1, 2, 0, 3, 0, 0, 0, 2, 9, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 4000 {
			return
		}
		shards := 1
		if len(ops) > 0 && ops[0]&0x80 != 0 {
			shards = 2
		}
		l := newTestListener(t, func(c *Config) {
			c.MaxSynBacklog, c.Backlog, c.SynAckRetries, c.Shards = 5, 3, 2, shards
			c.Cookies = []spec.CookiePolicy{spec.CookiesNever, spec.CookiesAuto, spec.CookiesAlways}[len(ops)%3]
			c.Overflow = []spec.OverflowPolicy{spec.OverflowDrop, spec.OverflowReset}[len(ops)/3%2]
		})
		now := time.Duration(0)
		ours := map[int]uint32{}
		newISN := func() uint32 { return uint32(now) }
		for len(ops) >= 4 {
			op, k, isn, dt := ops[0]%5, int(ops[1]%16), uint32(ops[2]%4), ops[3]
			ops = ops[4:]
			now += time.Duration(dt) * 50 * time.Millisecond
			switch op {
			case 0:
				d := l.OnSYN(syn(k, isn), at(now), newISN)
				if d.Action == SynQueued {
					ours[k] = d.OurISN
				}
			case 1:
				l.OnACK(tuple(k), isn+1, ours[k]+1, nil, at(now))
			case 2:
				l.Accept(cookieConn(k), at(now))
			case 3:
				l.Pop()
			case 4:
				l.Expire(at(now), func(Timeout) {})
			}
			checkInvariants(t, l)
			if l.SynQueueLen() > 5 || l.AcceptQueueLen() > 3 {
				t.Fatalf("queues at %d and %d, bounds 5 and 3", l.SynQueueLen(), l.AcceptQueueLen())
			}
		}
		st := l.Stats()
		if got := st.SynQueued + st.SynResent + st.SynResendLimited + st.CookiesSent + st.SynDropsQueueFull + st.SynDropsAcceptFull; got != st.SynReceived {
			t.Errorf("%d SYNs, %d outcomes", st.SynReceived, got)
		}
	})
}
