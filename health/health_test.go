package health

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/spec"
)

// server listens in ns on 127.0.0.1 and answers each connection with
// handle; it returns the address and a stop function.
func server(t *testing.T, ns *lab.NS, handle func(net.Conn)) (netip.AddrPort, func()) {
	t.Helper()
	var ln net.Listener
	if err := ns.Run(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); handle(c) }()
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { ln.Close(); wg.Wait() }) }
	t.Cleanup(stop)
	return netip.MustParseAddrPort(ln.Addr().String()), stop
}

func newNS(t *testing.T) *lab.NS {
	t.Helper()
	lab.RequireRoot(t)
	ns, err := lab.NewNS(t, "sgb-hc-")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.SetUp("lo"); err != nil {
		t.Fatal(err)
	}
	return ns
}

func check(ns *lab.NS, c *Checker) error {
	var err error
	ns.Run(func() error { err = c.Check(context.Background()); return nil })
	return err
}

func TestCheckTCPAndHTTP(t *testing.T) {
	ns := newNS(t)
	var mu sync.Mutex
	var preambles [][]byte
	addr, stop := server(t, ns, func(c net.Conn) {
		r := bufio.NewReader(c)
		if b, err := r.Peek(12); err == nil && bytes.HasPrefix(b, []byte("\r\n\r\n\x00")) {
			h := make([]byte, 16)
			io.ReadFull(r, h)
			mu.Lock()
			preambles = append(preambles, h)
			mu.Unlock()
		}
		line, _ := r.ReadString('\n')
		switch {
		case strings.HasPrefix(line, "GET /ok "):
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		case strings.HasPrefix(line, "GET "):
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\n\r\n")
		}
	})
	base := Config{HealthCheck: spec.HealthCheck{Timeout: time.Second, Rise: 1, Fall: 1, Status: 200}}
	tcp := &Checker{Target: addr, Config: base}
	if err := check(ns, tcp); err != nil {
		t.Errorf("tcp check of a listening server: %v", err)
	}
	h := base
	h.Type, h.Path = spec.CheckHTTP, "/ok"
	if err := check(ns, &Checker{Target: addr, Config: h}); err != nil {
		t.Errorf("http check expecting 200 from /ok: %v", err)
	}
	h.Path = "/bad"
	if err := check(ns, &Checker{Target: addr, Config: h}); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("http check of a 503: %v, want a status error", err)
	}
	h.Path, h.Preamble = "/ok", LocalProxyHeader(2)
	if err := check(ns, &Checker{Target: addr, Config: h}); err != nil {
		t.Errorf("http check after a PROXY v2 LOCAL header: %v", err)
	}
	mu.Lock()
	if len(preambles) != 1 || preambles[0][12] != 0x20 || preambles[0][13] != 0 {
		t.Errorf("server saw PROXY headers % x, want one v2 LOCAL", preambles)
	}
	mu.Unlock()
	stop()
	if err := check(ns, tcp); err == nil {
		t.Error("tcp check of a closed port passed")
	}
}

// TestRiseFall: a backend starts up, goes down after Fall failures in a
// row and comes back after Rise passes in a row, each change reported
// once.
func TestRiseFall(t *testing.T) {
	ns := newNS(t)
	var mu sync.Mutex
	fail := false
	addr, _ := server(t, ns, func(c net.Conn) {
		mu.Lock()
		f := fail
		mu.Unlock()
		if f {
			io.WriteString(c, "HTTP/1.0 500 no\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\n")
	})
	results := make(chan Result, 100)
	c := &Checker{Target: addr, Config: Config{HealthCheck: spec.HealthCheck{Type: spec.CheckHTTP, Path: "/", Status: 200, Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 3}},
		Report: func(r Result) { results <- r }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ns.Run(func() error { c.Run(ctx); return nil }); close(done) }()
	defer func() { cancel(); <-done }()
	next := func() Result {
		select {
		case r := <-results:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no check result")
		}
		return Result{}
	}
	if r := next(); !r.OK || !r.Up || r.Changed {
		t.Fatalf("first check %+v: want ok, up, unchanged", r)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	var seq []Result
	for len(seq) == 0 || seq[len(seq)-1].Up {
		seq = append(seq, next())
		if len(seq) > 6 {
			t.Fatalf("not down after %d checks: %+v", len(seq), seq)
		}
	}
	// One passing check may still have been in flight.
	failed := 0
	for _, r := range seq {
		if !r.OK {
			failed++
		}
	}
	if last := seq[len(seq)-1]; failed != 3 || !last.Changed {
		t.Errorf("went down after %d failures (changed %v), want 3", failed, last.Changed)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	passed := 0
	for {
		r := next()
		if r.OK {
			passed++
		}
		if r.Up {
			if passed != 2 || !r.Changed {
				t.Errorf("up after %d passes (changed %v), want 2", passed, r.Changed)
			}
			break
		}
		if passed > 2 {
			t.Fatal("not up after 3 passes")
		}
	}
}

// TestStartDown: a checker that starts down needs Rise passes.
func TestStartDown(t *testing.T) {
	ns := newNS(t)
	addr, _ := server(t, ns, func(net.Conn) {})
	results := make(chan Result, 10)
	c := &Checker{Target: addr, StartDown: true, Config: Config{HealthCheck: spec.HealthCheck{Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 1}},
		Report: func(r Result) { results <- r }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ns.Run(func() error { c.Run(ctx); return nil }); close(done) }()
	defer func() { cancel(); <-done }()
	first, second := <-results, <-results
	if !first.OK || first.Up || !second.Up || !second.Changed {
		t.Errorf("results %+v, %+v: want down after one pass, up after two", first, second)
	}
}
