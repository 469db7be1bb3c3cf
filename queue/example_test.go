package queue_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/queue"
)

func Example() {
	cfg := queue.DefaultConfig()
	cfg.MaxSynBacklog = 1
	l, err := queue.NewListener(cfg)
	if err != nil {
		panic(err)
	}
	start := time.Unix(0, 0)
	t1 := flow.Tuple{Client: netip.MustParseAddrPort("198.51.100.7:40000"), Service: netip.MustParseAddrPort("192.0.2.1:443")}
	t2 := flow.Tuple{Client: netip.MustParseAddrPort("198.51.100.8:40000"), Service: t1.Service}
	isn := func() uint32 { return 5000 } // use a random ISN in real life

	d := l.OnSYN(queue.SYN{Tuple: t1, ISN: 100, MSS: 1460}, start, isn)
	fmt.Println("first SYN:", d.Action, d.OurISN)
	d = l.OnSYN(queue.SYN{Tuple: t2, ISN: 200, MSS: 1460}, start, isn)
	fmt.Println("second SYN:", d.Action, "-", d.Reason)

	l.Expire(start.Add(time.Second), func(e queue.Timeout) {
		fmt.Println("retransmit SYN-ACK to", e.Tuple.Client, "attempt", e.Attempt)
	})

	a := l.OnACK(t1, 101, 5001, []byte("hello"), start.Add(1500*time.Millisecond))
	fmt.Println("ACK:", a.Action)
	a = l.OnACK(t2, 201, 12345, nil, start.Add(1500*time.Millisecond))
	fmt.Println("stray ACK:", a.Action, "cookie check allowed:", a.CookieCheckAllowed)

	c, _ := l.Pop()
	fmt.Printf("accepted %s with %q\n", c.Tuple, c.Data)
	// Output:
	// first SYN: queued 5000
	// second SYN: cookie - syn queue full
	// retransmit SYN-ACK to 198.51.100.7:40000 attempt 1
	// ACK: queued
	// stray ACK: no entry cookie check allowed: true
	// accepted 198.51.100.7:40000 -> 192.0.2.1:443 with "hello"
}
