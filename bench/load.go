package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/loadgen"
)

// The backend speaks two protocols on one port, told apart by the first
// bytes: loadgen's web-like request ("GET / ...") for the legitimate
// clients, and a sink ("SINK <n>\n", n bytes, answered "ok\n") for the bulk
// figure. The sink costs the endpoints nothing per byte, so bulk
// throughput measures the path between them, not a checksum or a
// generator on the same two cores.
const sinkCmd = "SINK "

// maxSink bounds one sink transfer.
const maxSink = 1 << 34

// benchHandler dispatches a backend connection by its first bytes.
func benchHandler(c net.Conn) error {
	br := bufio.NewReaderSize(c, 64<<10)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	head, err := br.Peek(len(sinkCmd))
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	pc := &peekedConn{Conn: c, r: br}
	if string(head) != sinkCmd {
		return loadgen.HTTPishHandler(pc)
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read sink command: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, sinkCmd)), 10, 64)
	if err != nil || n < 0 || n > maxSink {
		return fmt.Errorf("bad sink size %q", line)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Minute))
	if _, err := io.CopyN(io.Discard, br, n); err != nil {
		return fmt.Errorf("sink %d bytes: %w", n, err)
	}
	_, err = io.WriteString(c, "ok\n")
	return err
}

// peekedConn reads through the bufio.Reader that peeked at the request.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// startServer runs the backend server in ns on addr until the scenario
// closes.
func (b *bench) startServer(s *scenario, ns *lab.NS, addr netip.AddrPort) error {
	srv, err := loadgen.Serve(ns, addr, benchHandler)
	if err != nil {
		return fmt.Errorf("start backend server: %w", err)
	}
	s.closers = append(s.closers, func() { srv.Close() })
	return nil
}

// legit starts the legitimate clients of a flood step: a paced stream of
// new connections, each one web-like exchange.
func (b *bench) legit(ctx context.Context, s *scenario, d time.Duration) (*loadgen.Gen, error) {
	return loadgen.Start(ctx, loadgen.Config{
		From:        s.top.Client,
		Target:      s.target,
		Concurrency: int(float64(b.legitRate)*b.connectTimeout.Seconds()) + 64,
		Rate:        float64(b.legitRate),
		Duration:    d,
		Timeout:     b.connectTimeout,
		Exchange:    loadgen.HTTPishExchange,
	})
}

// maxConnRate opens connections (each one web-like exchange) as fast as
// b.connWorkers closed-loop workers can, without flood.
func (b *bench) maxConnRate(ctx context.Context, s *scenario) (loadgen.Report, error) {
	return loadgen.Run(ctx, loadgen.Config{
		From:        s.top.Client,
		Target:      s.target,
		Concurrency: b.connWorkers,
		Duration:    b.connRateDur,
		Timeout:     3 * time.Second,
		Exchange:    loadgen.HTTPishExchange,
	})
}

// bulkRuns is how many transfers bulk makes; it reports the best, since
// on a small machine one transfer is easily slowed by anything else that
// runs, but nothing makes one faster than the path.
const bulkRuns = 3

// bulk sends b.bulkBytes through one connection bulkRuns times and returns
// the best MB/s (10^6 bytes), timed from the first byte written to the
// server's answer.
func (b *bench) bulk(ctx context.Context, s *scenario) (float64, error) {
	best := 0.0
	for i := 0; i < bulkRuns; i++ {
		v, err := b.bulkOnce(ctx, s)
		if err != nil {
			return 0, err
		}
		best = max(best, v)
	}
	return best, nil
}

func (b *bench) bulkOnce(ctx context.Context, s *scenario) (float64, error) {
	var el time.Duration
	n := b.bulkBytes
	rep, err := loadgen.Run(ctx, loadgen.Config{
		From:    s.top.Client,
		Target:  s.target,
		Count:   1,
		Timeout: 2 * time.Minute,
		Exchange: func(c net.Conn) error {
			start := time.Now()
			if _, err := fmt.Fprintf(c, "%s%d\n", sinkCmd, n); err != nil {
				return err
			}
			buf := make([]byte, 256<<10)
			for left := n; left > 0; {
				chunk := buf[:min(int64(len(buf)), left)]
				w, err := c.Write(chunk)
				if err != nil {
					return err
				}
				left -= int64(w)
			}
			ack := make([]byte, 3)
			if _, err := io.ReadFull(c, ack); err != nil {
				return fmt.Errorf("read sink answer: %w", err)
			}
			if string(ack) != "ok\n" {
				return fmt.Errorf("sink answered %q", ack)
			}
			el = time.Since(start)
			return nil
		},
	})
	if err != nil {
		return 0, err
	}
	if rep.Successes != 1 || el <= 0 {
		return 0, fmt.Errorf("bulk transfer failed: %s", rep.LastError)
	}
	return float64(n) / el.Seconds() / 1e6, nil
}

// errStopped reports that the run was interrupted.
var errStopped = errors.New("bench: interrupted")
