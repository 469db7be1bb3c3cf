package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/flood"
	"github.com/syngate/syngate/loadgen"
)

// profileOpts configures -profile: one defense, two phases (new
// connections without flood, then a flood with the legitimate clients),
// each measured the same way.
type profileOpts struct {
	key     string
	dur     time.Duration
	rate    int  // flood pps; 0 = as fast as the generator goes
	perf    bool // record system-wide stacks with perf(1) when installed
	pprof   bool // fetch a Go CPU profile of syngate over its control socket
	outDir  string
	phases  string // "conn,flood" or one of them
	workers int    // closed-loop clients of the connection phase
}

// progStat is one BPF program's run-time counters (kernel.bpf_stats).
type progStat struct {
	name    string
	typ     ebpf.ProgramType
	runtime time.Duration
	runs    uint64
}

// progStats reads the counters of every loaded BPF program. They count
// only while a BPF_ENABLE_STATS descriptor (ebpf.EnableStats) is open.
func progStats() map[ebpf.ProgramID]progStat {
	out := map[ebpf.ProgramID]progStat{}
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return out
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, ierr := p.Info()
		st, serr := p.Stats()
		p.Close()
		if ierr != nil || serr != nil {
			continue
		}
		out[id] = progStat{name: info.Name, typ: info.Type, runtime: st.Runtime, runs: st.RunCount}
	}
}

// progDelta prints, for every program that ran between a and b, its runs
// and mean run time: what the program itself costs per packet, to set
// against the CPU the whole path took.
func progDelta(w io.Writer, a, b map[ebpf.ProgramID]progStat, per uint64, perName string) {
	type row struct {
		id ebpf.ProgramID
		progStat
	}
	var rows []row
	for id, s := range b {
		s0 := a[id]
		if s.runs <= s0.runs {
			continue
		}
		rows = append(rows, row{id, progStat{name: s.name, typ: s.typ, runtime: s.runtime - s0.runtime, runs: s.runs - s0.runs}})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].runtime > rows[j].runtime })
	for _, r := range rows {
		line := fmt.Sprintf("  bpf %-16s %-10v id %-6d runs %-10d %6.0f ns/run  total %v", r.name, r.typ, r.id, r.runs,
			float64(r.runtime.Nanoseconds())/float64(r.runs), r.runtime.Round(time.Millisecond))
		if per > 0 {
			line += fmt.Sprintf("  %6.0f ns/%s", float64(r.runtime.Nanoseconds())/float64(per), perName)
		}
		fmt.Fprintln(w, line)
	}
}

// profileDefense sets up one defense and profiles it: for each phase the
// CPU split (defense process, softirq, all busy) per unit of work, the BPF
// programs' own run time per run, and optionally perf and pprof profiles
// written to o.outDir.
func (b *bench) profileDefense(ctx context.Context, o profileOpts) int {
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		b.log.Error("profile dir", "err", err)
		return 1
	}
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.log.Warn("bpf run-time stats unavailable", "err", err)
	} else {
		defer stats.Close()
	}
	_, s, code := b.upDefense(ctx, o.key)
	if s == nil {
		return code
	}
	defer b.leave(s)
	if strings.Contains(o.phases, "flood") && b.floodMax == 0 {
		b.floodMax = 1e6 // only names the offered rate; -profile-rate 0 floods unpaced
	}
	for _, phase := range strings.Split(o.phases, ",") {
		if err := b.waitQuiet(ctx); err != nil {
			return 130
		}
		if err := b.profilePhase(ctx, s, o, strings.TrimSpace(phase)); err != nil {
			b.log.Error("profile phase", "phase", phase, "err", err)
			return 1
		}
	}
	return 0
}

// profilePhase runs one phase while the profilers record.
func (b *bench) profilePhase(ctx context.Context, s *scenario, o profileOpts, phase string) error {
	name := o.key + "-" + phase
	var stop []func() error
	if o.perf {
		if path, err := exec.LookPath("perf"); err == nil {
			out := filepath.Join(o.outDir, name+".perf.data")
			cmd := exec.CommandContext(ctx, path, "record", "-a", "-g", "-F", "1999", "-o", out, "--", "sleep", fmt.Sprint(o.dur.Seconds()))
			cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
			if err := cmd.Start(); err != nil {
				return fmt.Errorf("perf record: %w", err)
			}
			stop = append(stop, cmd.Wait)
			fmt.Printf("perf: %s (perf report -i %s --no-children --sort sym)\n", out, out)
		} else {
			b.log.Warn("perf is not installed (apt-get install linux-perf): no stacks recorded")
		}
	}
	if o.pprof && s.proc != nil {
		out := filepath.Join(o.outDir, name+".pprof")
		done := make(chan error, 1)
		go func() { done <- fetchPprof(ctx, filepath.Join(s.dir, "control.sock"), o.dur, out) }()
		stop = append(stop, func() error { return <-done })
		fmt.Printf("pprof: %s (go tool pprof -top %s)\n", out, out)
	}

	var fl *flood.Flood
	if phase == "flood" {
		cfg, err := b.floodConfig(s, o.rate, o.dur+b.connectTimeout+2*time.Second)
		if err != nil {
			return err
		}
		if fl, err = flood.Start(ctx, cfg); err != nil {
			return fmt.Errorf("start flood: %w", err)
		}
		defer func() { fl.Stop(); fl.Wait() }()
	}
	cpu0, _ := readCPUTimes()
	p0 := s.defenseCPU()
	ps0 := progStats()
	ls0 := s.linkDrops()
	var sent0 uint64
	if fl != nil {
		sent0 = fl.Stats().Sent
	}
	t0 := time.Now()
	var rep loadgen.Report
	var err error
	switch phase {
	case "conn":
		rep, err = loadgen.Run(ctx, loadgen.Config{
			From: s.top.Client, Target: s.target, Concurrency: o.workers, Duration: o.dur,
			Timeout: 3 * time.Second, Exchange: loadgen.HTTPishExchange,
		})
	case "flood", "calm":
		var g *loadgen.Gen
		if g, err = b.legit(ctx, s, o.dur); err == nil {
			sleepCtx(ctx, o.dur)
		}
		defer func() {
			if g != nil {
				r := g.Wait()
				fmt.Printf("  legitimate: %d/%d ok, connect %v\n", r.Successes, r.Attempts, r.Connect)
			}
		}()
	default:
		return fmt.Errorf("phase %q: want conn, calm or flood", phase)
	}
	if err != nil {
		return err
	}
	el := time.Since(t0)
	cpu1, _ := readCPUTimes()
	p1 := s.defenseCPU()
	ps1 := progStats()
	ls1 := s.linkDrops()
	dc := cpu1.sub(cpu0)
	var units uint64
	unit := "conn"
	if fl != nil {
		units, unit = fl.Stats().Sent-sent0, "SYN"
	} else if phase == "calm" {
		unit = "attempt"
	} else if phase == "conn" {
		units = rep.Successes
		fmt.Printf("%s: %d connections in %v (%.0f/s), connect %v\n", name, rep.Successes, el.Round(time.Millisecond),
			float64(rep.Successes)/el.Seconds(), rep.Connect)
	}
	if fl != nil {
		fmt.Printf("%s: %d flood SYNs in %v (%.0f/s)\n", name, units, el.Round(time.Millisecond), float64(units)/el.Seconds())
	}
	per := func(t time.Duration) float64 {
		if units == 0 {
			return 0
		}
		return float64(t.Nanoseconds()) / float64(units)
	}
	fmt.Printf("  cpu ns/%s: defense process %.0f, softirq %.0f, system %.0f, user %.0f, all busy %.0f (of %.1f cores)\n",
		unit, per(p1-p0), per(dc.softirq), per(dc.system), per(dc.user), per(dc.busy), dc.busy.Seconds()/el.Seconds())
	progDelta(os.Stdout, ps0, ps1, units, unit)
	for i, l := range ls1 {
		if d := l.sub(ls0[i]); d.rx+d.tx > 0 {
			fmt.Printf("  drops %-28s rx_dropped %d, tx_dropped %d (veth: tx_dropped counts failed XDP_TX)\n", l.name, d.rx, d.tx)
		}
	}
	for _, f := range stop {
		if err := f(); err != nil {
			b.log.Warn("profiler", "err", err)
		}
	}
	return nil
}

// fetchPprof saves a Go CPU profile of the daemon over its control socket.
func fetchPprof(ctx context.Context, sock string, d time.Duration, out string) error {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}}
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://syngate/debug/pprof/profile?seconds=%d", int(d.Seconds())), nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("pprof: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// linkDrop is one interface's drop counters (netlink statistics).
type linkDrop struct {
	name   string
	rx, tx uint64
}

func (l linkDrop) sub(o linkDrop) linkDrop {
	return linkDrop{name: l.name, rx: l.rx - o.rx, tx: l.tx - o.tx}
}

// linkDrops reads the drop counters of the lab's four veth ends. On veth,
// tx_dropped includes the frames XDP_TX could not put in the peer's ring
// (xdp_tx_err), and rx_dropped the frames a full ring refused.
func (s *scenario) linkDrops() []linkDrop {
	t := s.top
	var out []linkDrop
	for _, e := range []struct {
		ns interface {
			Link(string) (*netlink.LinkAttrs, error)
		}
		name, label string
	}{
		{t.Client, t.ClientIf.Name, "client " + t.ClientIf.Name},
		{t.Gateway, t.GatewayClient.Name, "gateway " + t.GatewayClient.Name},
		{t.Gateway, t.GatewayBackend.Name, "gateway " + t.GatewayBackend.Name},
		{t.Backend, t.BackendIf.Name, "backend " + t.BackendIf.Name},
	} {
		l := linkDrop{name: e.label}
		if a, err := e.ns.Link(e.name); err == nil && a.Statistics != nil {
			l.rx, l.tx = a.Statistics.RxDropped, a.Statistics.TxDropped
		}
		out = append(out, l)
	}
	return out
}
