package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/flood"
	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/loadgen"
)

// The queue-scaling measurement (-queues): one syngate gateway whose links
// have 1, 2 and 4 receive queues, measured in interleaved rounds.
//
// A veth has no interrupts: the receive processing (NAPI, and with it the
// gateway's XDP program) of a queue runs on the CPU that transmitted into
// it, and a packet socket or a TCP socket picks its transmit queue by the
// sending CPU through XPS. So the bench sets XPS on the client's and the
// backend's veths (queue q is sent from CPU q mod n, so each CPU drives its
// own queues; with fewer queues than CPUs, the CPUs share them) and pins
// one flood sender to each CPU. syngate pins each queue's AF_XDP loop to
// CPU q mod n too ("queue index": veths have no IRQ to follow). With one
// queue, one NAPI instance serves the queue at a time whatever the CPUs;
// with two, each CPU runs its own.

// queueRun is one measurement of one queue count.
type queueRun struct {
	Queues int `json:"queues"`
	// SYN-ACKs/s answered by XDP (cookies: always) under an unpaced flood
	// from one pinned sender per CPU, counted at the client.
	SynAckPPS float64 `json:"synack_pps"`
	// FloodPPS is what the veth took from the senders per second, and
	// FloodRefusedPPS what it refused (the gateway's receive ring full):
	// refusals say the gateway's queues limit, none that the senders do.
	FloodPPS        float64 `json:"flood_pps"`
	FloodRefusedPPS float64 `json:"flood_refused_pps"`
	// New connections/s (handshake through the engine with cookies: auto,
	// a request and an answer through the splice), 64 closed-loop clients.
	ConnPS   float64 `json:"conn_ps"`
	ConnFail uint64  `json:"conn_failed"`
	// CPU seconds per second of the window: ours (softirq, the bench
	// process, syngate), others (the rest of the machine's busy time:
	// other tenants), steal (taken by the hypervisor).
	FloodCPU cpuShare `json:"flood_cpu"`
	ConnCPU  cpuShare `json:"conn_cpu"`
	Error    string   `json:"error,omitempty"`
}

// cpuShare is CPU seconds per wall second over a window.
type cpuShare struct {
	Ours    float64   `json:"ours"`
	Others  float64   `json:"others"`
	Steal   float64   `json:"steal"`
	SoftIRQ []float64 `json:"softirq_per_cpu"`
}

// queueResults is what -queues writes to results/queues.json.
type queueResults struct {
	Date    string       `json:"date"`
	Syngate string       `json:"syngate"`
	Machine Machine      `json:"machine"`
	Window  float64      `json:"window_seconds"`
	Rounds  [][]queueRun `json:"rounds"`
}

var queueCounts = []int{1, 2, 4}

// queueScaling runs rounds of the three queue counts, alternating their
// order (1,2,4 then 4,2,1) so that a drift over the run weighs on every
// count alike, and prints each round's ratios and their ranges.
func (b *bench) queueScaling(ctx context.Context, rounds int, window time.Duration, out, commit string) int {
	res := queueResults{Date: time.Now().UTC().Format(time.RFC3339), Syngate: commit, Machine: machineInfo(), Window: window.Seconds()}
	for r := range rounds {
		order := slices.Clone(queueCounts)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		runs := map[int]queueRun{}
		for _, q := range order {
			run := b.queueRun(ctx, q, window, r)
			if ctx.Err() != nil {
				return 130
			}
			b.log.Info("queues", "round", r+1, "queues", q, "synack_pps", int(run.SynAckPPS), "conn_ps", int(run.ConnPS),
				"flood_cpu_ours", fmt.Sprintf("%.2f", run.FloodCPU.Ours), "flood_cpu_others", fmt.Sprintf("%.2f", run.FloodCPU.Others), "err", run.Error)
			runs[q] = run
		}
		var row []queueRun
		for _, q := range queueCounts {
			row = append(row, runs[q])
		}
		res.Rounds = append(res.Rounds, row)
	}
	printQueues(os.Stdout, res)
	if err := os.MkdirAll(out, 0o755); err == nil {
		if j, err := json.MarshalIndent(res, "", "  "); err == nil {
			p := filepath.Join(out, "queues.json")
			if err := os.WriteFile(p, append(j, '\n'), 0o644); err == nil {
				fmt.Printf("\nwrote %s\n", p)
			}
		}
	}
	return 0
}

// queueRun measures one queue count: the flood in one fresh lab, the
// connection rate in another.
func (b *bench) queueRun(ctx context.Context, q int, window time.Duration, round int) queueRun {
	run := queueRun{Queues: q}
	fail := func(err error) queueRun {
		run.Error = err.Error()
		b.log.Error("queues", "queues", q, "err", err)
		return run
	}
	// The flood: XDP answers every SYN (cookies: always).
	err := b.inQueueLab(ctx, fmt.Sprintf("queues-r%d-%dq-flood", round+1, q), q, "always", func(s *scenario) error {
		cfg, err := b.floodConfig(s, 0, window)
		if err != nil {
			return err
		}
		cfg.Workers = b.cpus
		for c := range b.cpus {
			cfg.CPUs = append(cfg.CPUs, c)
		}
		_, sa0, err := s.synacks.read()
		if err != nil {
			return err
		}
		var fr flood.Result
		run.FloodCPU, err = b.cpuWindow(s, func() error {
			fr, err = flood.Run(ctx, cfg)
			return err
		})
		if err != nil {
			return fmt.Errorf("flood: %w", err)
		}
		_, sa1, err := s.synacks.read()
		if err != nil {
			return err
		}
		if fr.Elapsed <= 0 || fr.Sent == 0 {
			return fmt.Errorf("the flood sent nothing (%v)", fr)
		}
		run.FloodPPS = fr.PPS
		run.FloodRefusedPPS = float64(fr.Errors) / fr.Elapsed.Seconds()
		run.SynAckPPS = float64(sa1-sa0) / fr.Elapsed.Seconds()
		return nil
	})
	if err != nil {
		return fail(err)
	}
	// New connections through the engine and the splice.
	err = b.inQueueLab(ctx, fmt.Sprintf("queues-r%d-%dq-conn", round+1, q), q, "auto", func(s *scenario) error {
		var rep loadgen.Report
		var err error
		run.ConnCPU, err = b.cpuWindow(s, func() error {
			rep, err = loadgen.Run(ctx, loadgen.Config{
				From: s.top.Client, Target: s.target, Concurrency: b.connWorkers,
				Duration: window, Timeout: 3 * time.Second, Exchange: loadgen.HTTPishExchange,
			})
			return err
		})
		if err != nil {
			return fmt.Errorf("connections: %w", err)
		}
		run.ConnPS = rep.Rate
		run.ConnFail = rep.Failures.Total()
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return run
}

// inQueueLab builds a lab with q queues per link, starts syngate with the
// cookie policy and the backend, steers the transmit queues by CPU, waits
// for a quiet machine and runs fn.
func (b *bench) inQueueLab(ctx context.Context, name string, q int, cookies string, fn func(*scenario) error) error {
	s, err := b.enterQueues(name, q)
	if err != nil {
		return err
	}
	defer b.leave(s)
	if err := startSyngate(b, s, cookies); err != nil {
		return err
	}
	for _, end := range []lab.Iface{s.top.ClientIf, s.top.BackendIf} {
		if err := setXPS(end.NS, end.Name, q, b.cpus); err != nil {
			return err
		}
	}
	if err := b.waitQuiet(ctx); err != nil {
		return err
	}
	if err := s.checkAlive(ctx); err != nil {
		return err
	}
	if err := fn(s); err != nil {
		return err
	}
	return s.checkAlive(ctx)
}

// cpuWindow runs fn and returns the CPU time spent over it, per wall
// second. The machine's busy time (without steal) splits into others, the
// user processes other than this one and syngate (other tenants), and
// ours, the rest: this process (flood senders, clients, backend), syngate,
// and the kernel's packet work (softirq, ksoftirqd). It is measured this
// way round because with tick-based accounting (no
// CONFIG_IRQ_TIME_ACCOUNTING, as here) softirq time spent in a process's
// context counts both as softirq and as that process's system time. A
// tenant process that ends inside the window is missed (its time moves to
// its parent's children's time, which covers its whole life and so is not
// counted), so others is a lower bound.
func (b *bench) cpuWindow(s *scenario, fn func() error) (cpuShare, error) {
	mine := map[int]bool{os.Getpid(): true}
	if s.proc != nil {
		mine[s.proc.PID()] = true
	}
	c0, err := readPerCPU()
	if err != nil {
		return cpuShare{}, err
	}
	o0 := otherProcs(mine)
	start := time.Now()
	if err := fn(); err != nil {
		return cpuShare{}, err
	}
	el := time.Since(start).Seconds()
	c1, err := readPerCPU()
	if err != nil {
		return cpuShare{}, err
	}
	o1 := otherProcs(mine)
	var others time.Duration
	for pid, t1 := range o1 {
		// A process that started in the window spent all its time in it.
		if t0 := o0[pid]; t1 > t0 {
			others += t1 - t0
		}
	}
	tot := c1[0].sub(c0[0])
	busy := tot.busy - tot.steal
	others = min(others, busy)
	sh := cpuShare{
		Ours:   (busy - others).Seconds() / el,
		Others: others.Seconds() / el,
		Steal:  tot.steal.Seconds() / el,
	}
	for i := 1; i < len(c1) && i < len(c0); i++ {
		sh.SoftIRQ = append(sh.SoftIRQ, c1[i].sub(c0[i]).softirq.Seconds()/el)
	}
	return sh, nil
}

// otherProcs is the CPU time (user and system) of every user process but
// those in mine, by PID. Kernel threads (children
// of kthreadd, PID 2) are left out: they do the kernel's packet work.
func otherProcs(mine map[int]bool) map[int]time.Duration {
	out := map[int]time.Duration{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || mine[pid] || pid == 2 {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(raw)
		i := strings.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		// After the name: state ppid ... utime stime, fields 3, 4, ...
		// 14, 15 of proc(5).
		f := strings.Fields(st[i+1:])
		if len(f) < 13 || f[1] == "2" {
			continue
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		sy, _ := strconv.ParseUint(f[12], 10, 64)
		out[pid] = time.Duration(u+sy) * time.Second / clockTick
	}
	return out
}

// perCPU is one line of /proc/stat with the steal time, which cpuTimes
// counts as busy.
type perCPU struct {
	cpuTimes
	steal time.Duration
}

func (c perCPU) sub(o perCPU) perCPU {
	return perCPU{cpuTimes: c.cpuTimes.sub(o.cpuTimes), steal: c.steal - o.steal}
}

// readPerCPU reads /proc/stat: the machine ("cpu") first, then each CPU.
func readPerCPU() ([]perCPU, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, fmt.Errorf("read /proc/stat: %w", err)
	}
	var out []perCPU
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		tick := func(i int) time.Duration {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			return time.Duration(v) * time.Second / clockTick
		}
		c := perCPU{cpuTimes: cpuTimes{user: tick(1) + tick(2), system: tick(3), softirq: tick(7)}, steal: tick(8)}
		c.busy = c.user + c.system + tick(6) + c.softirq + c.steal
		out = append(out, c)
	}
	if len(out) == 0 || !strings.HasPrefix(string(raw), "cpu ") {
		return nil, fmt.Errorf("parse /proc/stat: no cpu lines")
	}
	return out, nil
}

// xpsMask is the CPUs that send on transmit queue q of queues, with n
// CPUs: with at least as many queues as CPUs each CPU owns the queues
// q mod n == cpu; with fewer, CPU c sends on queue c mod queues.
func xpsMask(q, queues, n int) uint64 {
	var m uint64
	for c := range n {
		if queues >= n && q%n == c || queues < n && c%queues == q {
			m |= 1 << c
		}
	}
	return m
}

// setXPS maps ifname's transmit queues to CPUs (xpsMask) in ns. XPS lives
// only in sysfs, and sysfs shows the network namespace of whoever mounted
// it: a sysfs is mounted from inside ns on a temporary directory, written
// and unmounted.
func setXPS(ns *lab.NS, ifname string, queues, n int) error {
	if queues <= 1 || n > 64 {
		return nil
	}
	dir, err := os.MkdirTemp("", "syngate-bench-sysfs-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	return ns.Run(func() error {
		if err := unix.Mount("sysfs", dir, "sysfs", 0, ""); err != nil {
			return fmt.Errorf("mount sysfs in %s: %w", ns, err)
		}
		defer unix.Unmount(dir, unix.MNT_DETACH)
		for q := range queues {
			m := xpsMask(q, queues, n)
			p := filepath.Join(dir, "class", "net", ifname, "queues", fmt.Sprintf("tx-%d", q), "xps_cpus")
			if err := os.WriteFile(p, []byte(strconv.FormatUint(m, 16)), 0); err != nil {
				return fmt.Errorf("xps of %s tx-%d (CPUs %b): %w", ifname, q, m, err)
			}
		}
		return nil
	})
}

// printQueues prints each round and the ratios to one queue, per round
// and as ranges over the rounds.
func printQueues(w io.Writer, res queueResults) {
	fmt.Fprintf(w, "\nQueue scaling, %d rounds of %.0f s windows, %d CPUs (%s)\n\n", len(res.Rounds), res.Window, res.Machine.Cores, res.Machine.CPU)
	fmt.Fprintln(w, "| round | queues | SYN-ACKs/s | flood taken/s (refused/s) | CPU ours/others/steal (flood) | softirq per CPU | SYN-ACKs per our CPU-s | new conn/s (failed) | CPU ours/others (conn) | conn per our CPU-s |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for r, row := range res.Rounds {
		for _, run := range row {
			if run.Error != "" {
				fmt.Fprintf(w, "| %d | %d | error: %s | | | | | | | |\n", r+1, run.Queues, run.Error)
				continue
			}
			var soft []string
			for _, v := range run.FloodCPU.SoftIRQ {
				soft = append(soft, fmt.Sprintf("%.2f", v))
			}
			fmt.Fprintf(w, "| %d | %d | %.0f | %.0f (%.0f) | %.2f/%.2f/%.2f | %s | %.0f | %.0f (%d) | %.2f/%.2f | %.0f |\n",
				r+1, run.Queues, run.SynAckPPS, run.FloodPPS, run.FloodRefusedPPS, run.FloodCPU.Ours, run.FloodCPU.Others, run.FloodCPU.Steal,
				strings.Join(soft, " "), perCPUs(run.SynAckPPS, run.FloodCPU.Ours),
				run.ConnPS, run.ConnFail, run.ConnCPU.Ours, run.ConnCPU.Others, perCPUs(run.ConnPS, run.ConnCPU.Ours))
		}
	}
	type metric struct {
		name string
		v    func(queueRun) float64
	}
	metrics := []metric{
		{"SYN-ACKs/s", func(r queueRun) float64 { return r.SynAckPPS }},
		{"SYN-ACKs per our CPU-s", func(r queueRun) float64 { return perCPUs(r.SynAckPPS, r.FloodCPU.Ours) }},
		{"new conn/s", func(r queueRun) float64 { return r.ConnPS }},
		{"new conn per our CPU-s", func(r queueRun) float64 { return perCPUs(r.ConnPS, r.ConnCPU.Ours) }},
	}
	fmt.Fprintln(w, "\nRatios to 1 queue, per round (min-max, median over rounds):")
	fmt.Fprintln(w, "\n| figure | 2q/1q per round | 2q/1q min-max (median) | 4q/1q per round | 4q/1q min-max (median) |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	for _, m := range metrics {
		cells := []string{m.name}
		for qi := 1; qi < len(queueCounts); qi++ {
			var per []string
			var vals []float64
			for _, row := range res.Rounds {
				if row[0].Error != "" || row[qi].Error != "" || m.v(row[0]) == 0 {
					per = append(per, "-")
					continue
				}
				x := m.v(row[qi]) / m.v(row[0])
				vals = append(vals, x)
				per = append(per, fmt.Sprintf("%.2f", x))
			}
			cells = append(cells, strings.Join(per, " "), rangeOf(vals))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}

func perCPUs(v, cpu float64) float64 {
	if cpu <= 0 {
		return 0
	}
	return v / cpu
}

// rangeOf is "min-max (median)" of vals.
func rangeOf(vals []float64) string {
	if len(vals) == 0 {
		return "-"
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%.2f-%.2f (%.2f)", s[0], s[len(s)-1], med)
}
