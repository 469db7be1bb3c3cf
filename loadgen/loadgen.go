package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/syngate/syngate/lab"
)

// ErrUnbounded is returned for a configuration with neither a count nor a
// duration.
var ErrUnbounded = errors.New("loadgen: need a count or a duration")

// maxSeconds bounds Report.PerSecond.
const maxSeconds = 3600

// Exchange talks over one established connection, e.g. sends a request and
// reads the response. The connection's deadline is already set to the end
// of the attempt's Timeout; the generator closes it afterwards.
type Exchange func(c net.Conn) error

// Config describes a load: who connects where, how many at once, how many
// and for how long.
type Config struct {
	// From is the lab namespace the connections are made in.
	From *lab.NS
	// Target is the address to connect to.
	Target netip.AddrPort
	// Concurrency is the number of connections in flight at most;
	// default 1.
	Concurrency int
	// Rate paces new connections per second across all workers; zero
	// starts the next one as soon as a worker is free.
	Rate float64
	// Count bounds the attempts; Duration bounds the time new attempts
	// start in (running ones finish, within Timeout). At least one is
	// required; zero means no bound of that kind.
	Count    uint64
	Duration time.Duration
	// Timeout bounds each attempt, connect and exchange; default 5s.
	Timeout time.Duration
	// Exchange runs on each connection once connected; nil just
	// connects and closes.
	Exchange Exchange
}

// Kind is why an attempt failed.
type Kind int

// Failure kinds, from the error of the connect or the exchange.
const (
	Other    Kind = iota // anything else, e.g. a wrong response
	Timeout              // the attempt's deadline passed (also SYNs unanswered)
	Refused              // the target answered the SYN with a RST
	Reset                // the connection was reset or broken after it was made
	Canceled             // cut short by Stop or the caller's context, not the target's fault
)

// String is the kind's name as progress lines print it.
func (k Kind) String() string {
	switch k {
	case Timeout:
		return "timeout"
	case Refused:
		return "refused"
	case Reset:
		return "reset"
	case Canceled:
		return "canceled"
	default:
		return "other"
	}
}

// Classify sorts an attempt's error into a Kind.
func Classify(err error) Kind {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return Reset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT), errors.As(err, &ne) && ne.Timeout():
		return Timeout
	default:
		return Other
	}
}

// Failures counts failed attempts by kind.
type Failures struct {
	Timeout, Refused, Reset, Other, Canceled uint64
}

// Total is the number of failed attempts, canceled ones included.
func (f Failures) Total() uint64 { return f.Timeout + f.Refused + f.Reset + f.Other + f.Canceled }

// Judged counts the failures that say something about the target: all but
// the attempts the load itself cut short.
func (f Failures) Judged() uint64 { return f.Total() - f.Canceled }

// SuccessRate is Successes over the attempts that ended with a verdict
// (successes and judged failures), 1 when none did.
func (r Report) SuccessRate() float64 {
	ended := r.Successes + r.Failures.Judged()
	if ended == 0 {
		return 1
	}
	return float64(r.Successes) / float64(ended)
}

// Report is a load's outcome so far, or in the end.
type Report struct {
	Elapsed   time.Duration
	Attempts  uint64 // started; Successes + Failures.Total() once all ended
	Successes uint64
	Failures  Failures
	Connect   Latency // time to establish, successful connects only
	Request   Latency // time the Exchange took, successful ones only
	Rate      float64 // successes per second of Elapsed
	// PerSecond[i] counts the successes that ended in second i of the
	// load (at most the first hour), to see a dip during a flood.
	PerSecond []uint64
	LastError string // the latest failure, for diagnosis
}

// String is a one-line summary for logs and progress lines.
func (r Report) String() string {
	f := r.Failures
	return fmt.Sprintf("%d/%d ok in %v (%.0f/s); failed: %d timeout, %d refused, %d reset, %d other, %d canceled; connect %v; request %v",
		r.Successes, r.Attempts, r.Elapsed.Round(time.Millisecond), r.Rate,
		f.Timeout, f.Refused, f.Reset, f.Other, f.Canceled, r.Connect, r.Request)
}

// Gen is a running load. Its Snapshot is live, for a progress line.
type Gen struct {
	cfg    Config
	start  time.Time
	cancel context.CancelFunc
	done   chan struct{}
	end    atomic.Int64 // Elapsed in ns once done

	claimed   atomic.Uint64
	attempts  atomic.Uint64
	successes atomic.Uint64
	failures  [Canceled + 1]atomic.Uint64
	perSecond [maxSeconds]atomic.Uint64
	connect   Histogram
	request   Histogram
	lastErr   atomic.Pointer[string]
}

// Run runs a load to its end and reports it.
func Run(ctx context.Context, cfg Config) (Report, error) {
	g, err := Start(ctx, cfg)
	if err != nil {
		return Report{}, err
	}
	return g.Wait(), nil
}

// Start checks cfg and starts the workers. The load ends after Count
// attempts or Duration, on Stop or when ctx ends.
func Start(ctx context.Context, cfg Config) (*Gen, error) {
	if cfg.From == nil {
		return nil, errors.New("loadgen: no namespace to connect from")
	}
	if !cfg.Target.IsValid() || cfg.Target.Port() == 0 {
		return nil, fmt.Errorf("loadgen: bad target %v", cfg.Target)
	}
	if cfg.Count == 0 && cfg.Duration <= 0 {
		return nil, ErrUnbounded
	}
	if cfg.Concurrency < 0 || cfg.Rate < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("loadgen: negative concurrency, rate or timeout in %+v", cfg)
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	g := &Gen{cfg: cfg, start: time.Now(), cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() { g.work(ctx) })
	}
	go func() {
		wg.Wait()
		g.end.Store(int64(time.Since(g.start)))
		cancel()
		close(g.done)
	}()
	return g, nil
}

// Stop ends the load: no new attempts, running ones are aborted (and count
// as Canceled).
func (g *Gen) Stop() { g.cancel() }

// Done is closed when the load is over.
func (g *Gen) Done() <-chan struct{} { return g.done }

// Wait waits for the end of the load and reports it.
func (g *Gen) Wait() Report {
	<-g.done
	return g.Snapshot()
}

// Snapshot reports the load so far.
func (g *Gen) Snapshot() Report {
	r := Report{
		Elapsed:   time.Duration(g.end.Load()),
		Attempts:  g.attempts.Load(),
		Successes: g.successes.Load(),
		Connect:   g.connect.Summary(),
		Request:   g.request.Summary(),
	}
	if r.Elapsed == 0 {
		r.Elapsed = time.Since(g.start)
	}
	r.Failures = Failures{
		Timeout: g.failures[Timeout].Load(), Refused: g.failures[Refused].Load(),
		Reset: g.failures[Reset].Load(), Other: g.failures[Other].Load(),
		Canceled: g.failures[Canceled].Load(),
	}
	if r.Elapsed > 0 {
		r.Rate = float64(r.Successes) / r.Elapsed.Seconds()
	}
	secs := min(int(r.Elapsed/time.Second)+1, maxSeconds)
	r.PerSecond = make([]uint64, secs)
	for i := range r.PerSecond {
		r.PerSecond[i] = g.perSecond[i].Load()
	}
	if p := g.lastErr.Load(); p != nil {
		r.LastError = *p
	}
	return r
}

// next claims the next attempt, waiting for its turn under Rate; false
// when the load is over.
func (g *Gen) next(ctx context.Context, timer *time.Timer) bool {
	i := g.claimed.Add(1) - 1
	if g.cfg.Count > 0 && i >= g.cfg.Count {
		return false
	}
	var at time.Duration
	if g.cfg.Rate > 0 {
		at = time.Duration(float64(i) / g.cfg.Rate * float64(time.Second))
	}
	if g.cfg.Duration > 0 && at >= g.cfg.Duration {
		return false
	}
	if wait := time.Until(g.start.Add(at)); wait > 0 {
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		}
	}
	if g.cfg.Duration > 0 && time.Since(g.start) >= g.cfg.Duration {
		return false
	}
	return ctx.Err() == nil
}

func (g *Gen) work(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	dialer := net.Dialer{Timeout: g.cfg.Timeout}
	target := g.cfg.Target.String()
	for g.next(ctx, timer) {
		g.attempts.Add(1)
		err := g.attempt(ctx, &dialer, target)
		if err != nil {
			g.failures[Classify(err)].Add(1)
			msg := err.Error()
			g.lastErr.Store(&msg)
			continue
		}
		g.successes.Add(1)
		if s := int(time.Since(g.start) / time.Second); s < maxSeconds {
			g.perSecond[s].Add(1)
		}
	}
}

func (g *Gen) attempt(ctx context.Context, dialer *net.Dialer, target string) error {
	start := time.Now()
	var c net.Conn
	var connect time.Duration
	err := g.cfg.From.Run(func() error {
		t0 := time.Now()
		var err error
		c, err = dialer.DialContext(ctx, "tcp", target)
		connect = time.Since(t0)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	g.connect.Record(connect)
	if g.cfg.Exchange == nil {
		return nil
	}
	if err := c.SetDeadline(start.Add(g.cfg.Timeout)); err != nil {
		return err
	}
	// Stop aborts a running exchange by closing its connection.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	t0 := time.Now()
	if err := g.cfg.Exchange(c); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("exchange: %w", context.Canceled)
		}
		return fmt.Errorf("exchange: %w", err)
	}
	g.request.Record(time.Since(t0))
	return nil
}
