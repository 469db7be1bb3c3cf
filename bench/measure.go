package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/flood"
)

// floodLead is how long a flood runs before the legitimate clients and
// the measurement window start, so the window sees the steady state.
const floodLead = 500 * time.Millisecond

// gatewayMAC is the MAC the flood sends to: the gateway's client-facing
// interface. Passing it keeps the flood from needing ARP, which the
// ceiling programs would swallow.
func gatewayMAC(s *scenario) (net.HardwareAddr, error) {
	ifi, err := s.top.Gateway.Interface(s.top.GatewayClient.Name)
	if err != nil {
		return nil, fmt.Errorf("gateway interface: %w", err)
	}
	return ifi.HardwareAddr, nil
}

// floodConfig is the flood of one measurement: rate 0 means as fast as the
// generator goes. Both bounds are always set.
func (b *bench) floodConfig(s *scenario, rate int, d time.Duration) (flood.Config, error) {
	mac, err := gatewayMAC(s)
	if err != nil {
		return flood.Config{}, err
	}
	perSec := float64(rate)
	if rate == 0 {
		perSec = 20e6 // far above what one machine's veth takes
	}
	return flood.Config{
		From:     s.top.Client,
		Iface:    s.top.ClientIf.Name,
		DstMAC:   mac,
		Target:   s.target,
		Rate:     rate,
		Packets:  uint64(perSec*d.Seconds()*1.2) + 1000,
		Duration: d,
		Workers:  b.floodWorkers,
	}, nil
}

// ceilings measures the flood generator's maximum against an XDP_DROP
// program on the gateway's client-facing interface, and an XDP_TX bounce
// program's rate there; each in its own fresh lab.
func (b *bench) ceilings(ctx context.Context, withTX bool) (c Ceilings) {
	drop, err := b.ceiling(ctx, "xdp-drop", progDrop, "ceiling: XDP_DROP on the gateway under the maximum flood")
	if err != nil {
		c.Error = "xdp_drop: " + err.Error()
		b.log.Error("ceiling XDP_DROP", "err", err)
		return c
	}
	b.floodMax = drop.res.PPS
	c.FloodMaxPPS = drop.res.PPS
	c.XDPDropPPS = drop.progPPS
	b.floorBusy = drop.cpu.busy.Seconds() / float64(drop.res.Sent)
	b.floorSoft = drop.cpu.softirq.Seconds() / float64(drop.res.Sent)
	c.XDPDropCPUPerMSYN = b.floorBusy * 1e6
	c.XDPDropSoftirqPerMSYN = b.floorSoft * 1e6
	b.log.Info("ceiling: XDP_DROP", "flood_pps", int(drop.res.PPS), "dropped_pps", int(c.XDPDropPPS), "errors", drop.res.Errors)
	if !withTX || ctx.Err() != nil {
		return c
	}
	bounce, err := b.ceiling(ctx, "xdp-tx", progBounce, "ceiling: XDP_TX bounce on the gateway under the maximum flood")
	if err != nil {
		c.Error = "xdp_tx: " + err.Error()
		b.log.Error("ceiling XDP_TX", "err", err)
		return c
	}
	c.XDPTXPPS = bounce.progPPS
	c.XDPTXSynAckPPS = bounce.synackPPS
	c.XDPTXCPUPerMSYN = bounce.cpu.softirq.Seconds() / float64(bounce.res.Sent) * 1e6
	b.log.Info("ceiling: XDP_TX", "flood_pps", int(bounce.res.PPS), "bounced_pps", int(c.XDPTXPPS), "synacks_at_client_pps", int(c.XDPTXSynAckPPS))
	return c
}

// ceilingRun is what one ceiling measurement saw.
type ceilingRun struct {
	res       flood.Result
	progPPS   float64  // packets/s the gateway's program handled
	synackPPS float64  // SYN-ACKs/s counted at the client
	cpu       cpuTimes // machine CPU time over the flood
}

// ceiling floods, unpaced, a fresh lab whose gateway runs prog on its
// client-facing interface.
func (b *bench) ceiling(ctx context.Context, name string, kind progKind, msg string) (r ceilingRun, err error) {
	d := b.floodDur
	s, err := b.enter(name)
	if err != nil {
		return r, err
	}
	defer b.leave(s)
	p, err := newCounterProg(kind)
	if err != nil {
		return r, err
	}
	defer p.Close()
	cfg, err := b.floodConfig(s, 0, d)
	if err != nil {
		return r, err
	}
	if err := p.attach(s.top.Gateway, s.top.GatewayClient.Name); err != nil {
		return r, err
	}
	if err := b.waitQuiet(ctx); err != nil {
		return r, err
	}
	b.log.Info(msg, "seconds", d.Seconds())
	cpu0, _ := readCPUTimes()
	f0, _, _ := p.read()
	_, sa0, _ := s.synacks.read()
	r.res, err = flood.Run(ctx, cfg)
	if err != nil {
		return r, fmt.Errorf("flood: %w", err)
	}
	cpu1, _ := readCPUTimes()
	f1, _, _ := p.read()
	_, sa1, _ := s.synacks.read()
	el := r.res.Elapsed.Seconds()
	if r.res.Sent == 0 || el <= 0 {
		return r, fmt.Errorf("the flood sent nothing (%v)", r.res)
	}
	r.progPPS = float64(f1-f0) / el
	r.synackPPS = float64(sa1-sa0) / el
	r.cpu = cpu1.sub(cpu0)
	return r, nil
}

// runDefense measures one defense in a fresh lab: connection rate and bulk
// throughput without flood, then every flood step with legitimate clients.
func (b *bench) runDefense(ctx context.Context, d defense) (r DefenseResult) {
	r = DefenseResult{Key: d.key, Name: d.name, How: d.how}
	fail := func(err error) DefenseResult {
		r.Error = err.Error()
		b.log.Error("defense failed", "defense", d.key, "err", err)
		return r
	}
	b.log.Info("defense: setting up", "defense", d.name)
	s, err := b.enter(d.key)
	if err != nil {
		return fail(err)
	}
	defer b.leave(s)
	if err := d.setup(ctx, b, s); err != nil {
		return fail(fmt.Errorf("setup: %w", err))
	}

	if err := b.waitQuiet(ctx); err != nil {
		return fail(err)
	}
	rep, err := b.maxConnRate(ctx, s)
	if err != nil {
		return fail(fmt.Errorf("connection rate: %w", err))
	}
	r.MaxConnsPerSec = rep.Rate
	r.ConnRateErrors = int(rep.Failures.Total())
	b.log.Info("no flood: new connections", "defense", d.key, "per_sec", int(rep.Rate), "failed", rep.Failures.Total(), "last_error", rep.LastError)
	if err := b.waitQuiet(ctx); err != nil {
		return fail(err)
	}
	if r.BulkMBps, err = b.bulk(ctx, s); err != nil {
		b.log.Error("bulk", "defense", d.key, "err", err)
		r.Error = "bulk: " + err.Error()
	} else {
		b.log.Info("no flood: bulk", "defense", d.key, "MB_per_sec", int(r.BulkMBps))
	}

	for _, frac := range b.steps {
		if err := s.checkAlive(ctx); err != nil {
			return fail(err)
		}
		st, err := b.step(ctx, s, frac)
		if err != nil {
			return fail(fmt.Errorf("flood step %.0f%%: %w", frac*100, err))
		}
		r.Steps = append(r.Steps, st)
		b.log.Info("flood step", "defense", d.key, "offered_pps", int(st.OfferedPPS), "flood_pps", int(st.FloodPPS),
			"success", fmt.Sprintf("%.1f%%", 100*st.SuccessRate), "connect_p99_ms", st.ConnectP99Ms,
			"synacks_per_sec", int(st.SynAcksPerSec), "cpu_s_per_msyn", fmt.Sprintf("%.2f", st.CPUPerMSYN))
	}
	if s.proc != nil {
		if err := s.checkAlive(ctx); err != nil {
			return fail(err)
		}
		r.RSSBytes, r.PeakRSSBytes, _ = procMem(s.proc.PID())
	}
	return r
}

// step runs one flood rate: the flood starts, after floodLead the
// legitimate clients start for b.floodDur, and the flood lasts until
// every attempt has ended (started + timeout), so no attempt sees the flood
// stop. Counters are read at the start and end of the clients' window.
func (b *bench) step(ctx context.Context, s *scenario, frac float64) (Step, error) {
	st := Step{Fraction: frac, OfferedPPS: frac * b.floodMax}
	if err := b.waitQuiet(ctx); err != nil {
		return st, err
	}
	var fl *flood.Flood
	if frac > 0 {
		rate := int(frac * b.floodMax)
		if frac >= 1 {
			rate = 0 // the maximum: as fast as the generator goes here
		}
		cfg, err := b.floodConfig(s, rate, floodLead+b.floodDur+b.connectTimeout+time.Second)
		if err != nil {
			return st, err
		}
		if fl, err = flood.Start(ctx, cfg); err != nil {
			return st, fmt.Errorf("start flood: %w", err)
		}
		defer func() { fl.Stop(); fl.Wait() }()
		if err := sleepCtx(ctx, floodLead); err != nil {
			return st, err
		}
	}
	sent := func() uint64 {
		if fl == nil {
			return 0
		}
		return fl.Stats().Sent
	}
	cpu0, err := readCPUTimes()
	if err != nil {
		return st, err
	}
	p0 := s.defenseCPU()
	self0, _ := procCPU(os.Getpid())
	_, sa0, err := s.synacks.read()
	if err != nil {
		return st, err
	}
	fs0, t0 := sent(), time.Now()

	g, err := b.legit(ctx, s, b.floodDur)
	if err != nil {
		return st, fmt.Errorf("start legitimate clients: %w", err)
	}
	if err := sleepCtx(ctx, b.floodDur); err != nil {
		g.Stop()
		return st, err
	}
	cpu1, _ := readCPUTimes()
	p1 := s.defenseCPU()
	self1, _ := procCPU(os.Getpid())
	_, sa1, _ := s.synacks.read()
	fs1, t1 := sent(), time.Now()
	rep := g.Wait()
	if ctx.Err() != nil {
		return st, ctx.Err()
	}

	win := t1.Sub(t0).Seconds()
	floodSent := fs1 - fs0
	st.FloodSent = floodSent
	st.FloodPPS = float64(floodSent) / win
	st.Attempts = int(rep.Attempts)
	st.Succeeded = int(rep.Successes)
	if rep.Attempts > 0 {
		st.SuccessRate = float64(rep.Successes) / float64(rep.Attempts)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	st.ConnectP50Ms, st.ConnectP99Ms = ms(rep.Connect.P50), ms(rep.Connect.P99)
	st.RequestP50Ms, st.RequestP99Ms = ms(rep.Request.P50), ms(rep.Request.P99)
	st.SynAcksPerSec = float64(sa1-sa0) / win
	dc := cpu1.sub(cpu0)
	st.CPUProcessS = (p1 - p0).Seconds()
	st.CPUSoftirqS = dc.softirq.Seconds()
	st.CPUBusyS = dc.busy.Seconds()
	st.CPUOtherS = max(0, st.CPUBusyS-st.CPUSoftirqS-st.CPUProcessS-(self1-self0).Seconds())
	st.CPUCapacityS = win * float64(b.cpus)
	if floodSent > 0 {
		st.CPUPerMSYN = (st.CPUProcessS + st.CPUSoftirqS) / float64(floodSent) * 1e6
		st.CPUMarginalPerMSYN = (st.CPUBusyS/float64(floodSent) - b.floorBusy) * 1e6
	}
	if f := rep.Failures; f.Total() > 0 {
		st.Failures = map[string]uint64{}
		for k, v := range map[string]uint64{"timeout": f.Timeout, "refused": f.Refused, "reset": f.Reset, "other": f.Other, "canceled": f.Canceled} {
			if v > 0 {
				st.Failures[k] = v
			}
		}
		st.LastError = rep.LastError
		b.log.Info("legitimate failures", "failures", st.Failures, "last", rep.LastError)
	}
	return st, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// machineInfo describes the machine for the results.
func machineInfo() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	first := func(name string, args ...string) string {
		o, err := exec.Command(name, args...).Output()
		if err != nil {
			return ""
		}
		l, _, _ := strings.Cut(string(o), "\n")
		return strings.TrimSpace(l)
	}
	m.HAProxy = first("haproxy", "-v")
	// nftables rules are loaded over netlink by the google/nftables
	// library (no nft binary); the kernel's nf_tables does the work.
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/google/nftables" {
				m.Nftables = d.Path + " " + d.Version
			}
		}
	}
	return m
}

// waitQuiet waits (up to b.quietWait) until the machine is mostly idle:
// the bench shares it with whatever else runs, and a busy machine makes a
// defense look slower than it is. It only waits; the step's cpu_other_s
// says afterwards how disturbed it was.
func (b *bench) waitQuiet(ctx context.Context) error {
	deadline := time.Now().Add(b.quietWait)
	for {
		c0, err := readCPUTimes()
		if err != nil {
			return nil
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
		c1, _ := readCPUTimes()
		load := c1.sub(c0).busy.Seconds() / (0.5 * float64(b.cpus))
		if load < 0.25 {
			return nil
		}
		if time.Now().After(deadline) {
			b.log.Warn("the machine is busy with something else; measuring anyway", "load", fmt.Sprintf("%.0f%%", 100*load))
			return nil
		}
	}
}

// disturbed reports steps whose windows other programs took more than a
// tenth of the machine's CPU in.
func disturbed(res *Results) []string {
	var out []string
	for _, d := range res.Defenses {
		for _, s := range d.Steps {
			if s.CPUCapacityS > 0 && s.CPUOtherS > 0.1*s.CPUCapacityS {
				out = append(out, fmt.Sprintf("%s at %.0f%%: other programs used %.0f%% of the CPU", d.Name, 100*s.Fraction, 100*s.CPUOtherS/s.CPUCapacityS))
			}
		}
	}
	return out
}
