// Package demo is syngate's one-command lab demo: it builds client, gateway
// and backend network namespaces, starts a small backend service, runs
// `syngate run` in the gateway namespace on an embedded config, and drives
// legitimate clients and a bounded spoofed SYN flood through it while it
// prints a live line, then a summary. Everything it creates is removed on
// return, on error and on Ctrl-C too. The command is cmd/syngate-demo; the
// daemon binary (cmd/syngate) does not contain the demo.
//
//	sum, err := demo.Run(ctx, demo.Options{Binary: "/usr/local/bin/syngate", Out: os.Stdout})
package demo

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/syngate/syngate/flood"
	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/loadgen"
	"github.com/syngate/syngate/metrics"
)

//go:embed demo.yaml
var configTemplate string

// Options tune the demo. Zero values take the defaults.
type Options struct {
	// Binary is the syngate executable to run in the gateway namespace
	// (required; see BuildSyngate).
	Binary string
	// Flood is how long the flood phase lasts; default 10s, at most
	// MaxFlood.
	Flood time.Duration
	// Calm is the length of the phases before and after the flood;
	// default 3s.
	Calm time.Duration
	// FloodRate caps the flood in packets per second; 0 = as fast as the
	// machine allows.
	FloodRate int
	// Clients is the number of concurrent legitimate clients; default 8.
	Clients int
	// Out receives the live line and the summary; default os.Stdout.
	Out io.Writer
	// MetricsFile, if set, receives the last /metrics scrape.
	MetricsFile string
}

// Phase is one stretch of the demo with its legitimate traffic.
type Phase struct {
	Name      string
	Legit     loadgen.Report
	FloodSent uint64
	FloodPPS  float64
	SynAcks   float64 // SYN-ACKs syngate sent during the phase
}

// Summary is what the demo measured.
type Summary struct {
	Phases  []Phase
	Metrics metrics.Samples // the last scrape
}

// MaxFlood bounds the flood phase: the demo shows, it does not soak.
const MaxFlood = time.Minute

// configTmpl is parsed once; a broken template is a build defect, caught by
// the package's tests.
var configTmpl = template.Must(template.New("demo.yaml").Parse(configTemplate))

// metricsAddr is where syngate serves metrics inside the gateway namespace.
var metricsAddr = netip.MustParseAddrPort("127.0.0.1:9420")

const (
	servicePort = 80
	backendPort = 8080
)

// Run runs the demo.
func Run(ctx context.Context, o Options) (sum Summary, err error) {
	if os.Geteuid() != 0 {
		return sum, errors.New("the demo needs root: it creates network namespaces and attaches XDP programs (try: sudo go run ./cmd/syngate-demo)")
	}
	o.defaults()
	if o.Binary == "" {
		return sum, errors.New("demo: no syngate binary given")
	}
	out := o.Out

	fmt.Fprintln(out, "building the lab: client, gateway and backend namespaces ...")
	top, err := lab.BuildTopology(lab.Options{Prefix: "sg-demo-", NoOffloads: true})
	if err != nil {
		return sum, err
	}
	defer func() {
		err = errors.Join(err, top.Close())
		fmt.Fprintln(out, "lab removed")
	}()
	if err := top.PrepareGatewayXDP(); err != nil {
		return sum, err
	}
	srv, err := loadgen.Serve(top.Backend, netip.AddrPortFrom(top.BackendIf.V4.Addr(), backendPort), loadgen.HTTPishHandler)
	if err != nil {
		return sum, err
	}
	defer srv.Close()

	dir, err := os.MkdirTemp("", "syngate-demo-")
	if err != nil {
		return sum, err
	}
	defer os.RemoveAll(dir)
	gw, err := startGateway(ctx, o.Binary, top, dir)
	if err != nil {
		return sum, err
	}
	defer func() { err = errors.Join(err, gw.stop()) }()
	fmt.Fprintf(out, "syngate is running in namespace %s; metrics at http://%s/metrics there\n", top.Gateway, metricsAddr)
	fmt.Fprintf(out, "service %s:%d -> backend %s:%d\n\n", top.VIP4, servicePort, top.BackendIf.V4.Addr(), backendPort)

	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	phases := []struct {
		name  string
		d     time.Duration
		flood bool
	}{{"before flood", o.Calm, false}, {"under flood", o.Flood, true}, {"after flood", o.Calm, false}}
	for _, ph := range phases {
		p, err := runPhase(ctx, out, top, gw, vip, o, ph.name, ph.d, ph.flood)
		sum.Phases = append(sum.Phases, p)
		if err != nil {
			return sum, err
		}
	}
	sum.Metrics, _ = gw.scrape()
	if o.MetricsFile != "" {
		if body, err := top.Gateway.HTTPGet(metricsAddr, "/metrics", 5*time.Second); err == nil {
			os.WriteFile(o.MetricsFile, body, 0o644)
		}
	}
	printSummary(out, sum, o)
	return sum, nil
}

func (o *Options) defaults() {
	if o.Flood <= 0 {
		o.Flood = 10 * time.Second
	}
	o.Flood = min(o.Flood, MaxFlood)
	if o.Calm <= 0 {
		o.Calm = 3 * time.Second
	}
	if o.Clients <= 0 {
		o.Clients = 8
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
}

// runPhase drives legitimate clients (and the flood) for d, printing a live
// line every second.
func runPhase(ctx context.Context, out io.Writer, top *lab.Topology, gw *gateway, vip netip.AddrPort, o Options, name string, d time.Duration, withFlood bool) (Phase, error) {
	p := Phase{Name: name}
	before, _ := gw.scrape()
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	legit, err := loadgen.Start(pctx, loadgen.Config{
		From: top.Client, Target: vip, Concurrency: o.Clients, Duration: d,
		Timeout: 3 * time.Second, Exchange: loadgen.HTTPishExchange,
	})
	if err != nil {
		return p, fmt.Errorf("start clients: %w", err)
	}
	var fl *flood.Flood
	if withFlood {
		fl, err = flood.Start(pctx, flood.Config{
			From: top.Client, Target: vip, Rate: o.FloodRate, Duration: d, Packets: 1 << 40,
		})
		if err != nil {
			legit.Stop()
			legit.Wait()
			return p, fmt.Errorf("start flood: %w", err)
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start, last := time.Now(), before
	var lastSent uint64
loop:
	for {
		select {
		case <-legit.Done():
			break loop
		case <-tick.C:
			now, _ := gw.scrape()
			var sent uint64
			if fl != nil {
				sent = fl.Stats().Sent
			}
			live(out, name, time.Since(start), legit.Snapshot(), float64(sent-lastSent), synAcks(now)-synAcks(last), now)
			last, lastSent = now, sent
		}
	}
	fmt.Fprintln(out)
	p.Legit = legit.Wait()
	if fl != nil {
		fl.Stop()
		r, err := fl.Wait()
		if err != nil {
			return p, fmt.Errorf("flood: %w", err)
		}
		p.FloodSent, p.FloodPPS = r.Sent, r.PPS
	}
	after, _ := gw.scrape()
	p.SynAcks = synAcks(after) - synAcks(before)
	return p, ctx.Err()
}

// synAcks counts the SYN-ACKs of the engine and of the XDP program (cookie
// offload).
func synAcks(m metrics.Samples) float64 {
	return m.Sum("syngate_synack_sent_total") + m.Sum("syngate_xdp_packets_total", `reason="tx_synack_cookie"`)
}

// live prints the progress line, overwriting the previous one.
func live(out io.Writer, phase string, el time.Duration, r loadgen.Report, floodPPS, synAckPS float64, m metrics.Samples) {
	ok := 100 * r.SuccessRate()
	fmt.Fprintf(out, "\r%-12s %3.0fs | flood %7.0f pps | SYN-ACKs %7.0f/s | legit %5.1f%% ok of %d, p99 connect %v | syn queue %.0f accept %.0f   ",
		phase, el.Seconds(), floodPPS, synAckPS, ok, r.Attempts, r.Connect.P99.Round(10*time.Microsecond),
		m.Sum("syngate_queue_depth", `queue="syn"`), m.Sum("syngate_queue_depth", `queue="accept"`))
}

func printSummary(out io.Writer, sum Summary, o Options) {
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tlegit ok\tfailed\tsuccess\tp50 connect\tp99 connect\tp99 request\tflood sent\tflood pps\tSYN-ACKs\t")
	for _, p := range sum.Phases {
		failed := p.Legit.Failures.Judged() // those cut short by the phase's end got no verdict
		rate := 100 * p.Legit.SuccessRate()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f%%\t%v\t%v\t%v\t%d\t%.0f\t%.0f\t\n", p.Name, p.Legit.Successes, failed, rate,
			p.Legit.Connect.P50.Round(time.Microsecond), p.Legit.Connect.P99.Round(time.Microsecond),
			p.Legit.Request.P99.Round(time.Microsecond), p.FloodSent, p.FloodPPS, p.SynAcks)
	}
	tw.Flush()
	for _, p := range sum.Phases {
		if f := p.Legit.Failures; f.Total() > 0 {
			fmt.Fprintf(out, "%s: failures: %d timeout, %d refused, %d reset, %d other, %d cut short; last: %s\n",
				p.Name, f.Timeout, f.Refused, f.Reset, f.Other, f.Canceled, p.Legit.LastError)
		}
	}
	m := sum.Metrics
	fmt.Fprintf(out, "\nsyngate: %.0f SYN-ACKs with cookies from XDP; %.0f SYNs reached the engine, %.0f SYN-ACKs with cookies, %.0f from the queue; %.0f ACKs validated, %.0f rejected; %.0f connections spliced\n",
		m.Sum("syngate_xdp_packets_total", `reason="tx_synack_cookie"`),
		m.Sum("syngate_syn_received_total"), m.Sum("syngate_synack_sent_total", `kind="cookie"`), m.Sum("syngate_synack_sent_total", `kind="queue"`),
		m.Sum("syngate_ack_validated_total"), m.Sum("syngate_ack_rejected_total"), m.Sum("syngate_connections_spliced_total"))
	fmt.Fprintf(out, "XDP: %.0f packets to AF_XDP, %.0f forwarded on the fast path, %.0f dropped\n",
		m.Sum("syngate_xdp_packets_total", `verdict="redirect"`)-m.Sum("syngate_fastpath_packets_total"),
		m.Sum("syngate_fastpath_packets_total"), m.Sum("syngate_xdp_packets_total", `verdict="drop"`))
	if o.MetricsFile != "" {
		fmt.Fprintf(out, "the last /metrics scrape is in %s\n", o.MetricsFile)
	}
}

// gateway is `syngate run` inside the lab's gateway namespace.
type gateway struct {
	top *lab.Topology
	d   *lab.Daemon
}

func startGateway(ctx context.Context, bin string, top *lab.Topology, dir string) (*gateway, error) {
	var cfg bytes.Buffer
	ifaces := []string{top.GatewayClient.Name}
	if top.GatewayBackend.Name != top.GatewayClient.Name {
		ifaces = append(ifaces, top.GatewayBackend.Name)
	}
	err := configTmpl.Execute(&cfg, map[string]any{
		"Interfaces": ifaces, "SecretFile": filepath.Join(dir, "secret"), "Metrics": metricsAddr,
		"Listen":  netip.AddrPortFrom(top.VIP4, servicePort),
		"Backend": netip.AddrPortFrom(top.BackendIf.V4.Addr(), backendPort),
	})
	if err != nil {
		return nil, fmt.Errorf("demo config: %w", err)
	}
	path := filepath.Join(dir, "syngate.yaml")
	if err := os.WriteFile(path, cfg.Bytes(), 0o600); err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "ready")
	d, err := lab.StartDaemon(top.Gateway, filepath.Join(dir, "syngate.log"), bin, "run", "-c", path, "-ready-file", ready)
	if err != nil {
		return nil, err
	}
	g := &gateway{top: top, d: d}
	err = d.WaitReady(20*time.Second, func() bool {
		_, err := os.Stat(ready)
		return err == nil || ctx.Err() != nil
	})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		g.stop()
		return nil, err
	}
	return g, nil
}

func (g *gateway) scrape() (metrics.Samples, error) {
	body, err := g.top.Gateway.HTTPGet(metricsAddr, "/metrics", 2*time.Second)
	if err != nil {
		return metrics.Samples{}, err
	}
	return metrics.ParseText(string(body))
}

// stop ends syngate by its PID: SIGTERM, then SIGKILL after 10 s.
func (g *gateway) stop() error { return g.d.Stop(10 * time.Second) }
