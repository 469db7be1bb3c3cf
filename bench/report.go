package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// methodNotes explains each figure; they go into the JSON and the markdown.
func methodNotes() map[string]string {
	return map[string]string{
		"lab":          "one fresh lab per defense (lab.BuildTopology, routed: client - gateway - backend over veth, offloads off); the client-side veth end runs an XDP SYN-ACK counter and the backend end XDP_PASS in every scenario, so the veths work in the same mode for all defenses",
		"flood":        "flood package: spoofed SYNs from 198.18.0.0/15 to VIP:80 over AF_PACKET from the client namespace; the maximum is what it reached against XDP_DROP; steps are fractions of it (the 100% step is unpaced); the gateway routes the spoofed range back to the client side, where the SYN-ACKs are counted and dropped",
		"legit":        "loadgen: paced new connections from the client namespace during the flood, each a one-line request and a short response; an attempt fails past its timeout (connect + exchange), so a lost SYN costs a 1 s retransmission and two lose the attempt",
		"synacks":      "SYN-ACKs per second counted by an XDP program on the client's veth end (IPv4 TCP frames with SYN and ACK), over the legitimate clients' window; includes the few legitimate ones and retransmissions; those from or to the spoofed range are dropped there after counting (they would leave for the internet)",
		"cpu":          "cpu_s_per_msyn = (CPU time of the defense's process from /proc/<pid>/stat utime+stime, 0 for kernel defenses) + (machine-wide softirq time from /proc/stat) over the window, per million flood SYNs sent in it. /proc/stat is not per namespace, so softirq includes delivering the flood to the gateway (see the XDP_DROP floor) and, without CONFIG_IRQ_TIME_ACCOUNTING, is tick-sampled and may also be charged to a process it interrupted. cpu_marginal_s_per_msyn = machine busy CPU per million SYNs minus the same under XDP_DROP",
		"conn_rate":    "closed loop of 64 connections in flight, no flood: successful connect + request + close per second",
		"bulk":         "best of 3 transfers, each one connection: the client writes N bytes to a sink on the backend that discards them and answers; MB/s = N / time to the answer (10^6 bytes)",
		"memory":       "VmRSS and VmHWM of the defense's process at the end of its run (after all flood steps)",
		"xdp_ceilings": "XDP_DROP and XDP_TX programs built at run time with cilium/ebpf asm, attached natively to the gateway's client-facing veth under the unpaced flood; XDP_TX swaps MACs and sets ACK, and the client-side counter sees the result; xdp_tx_cpu_s_per_msyn is the bounce's softirq time per million SYNs, the CPU ceiling of an XDP answer",
	}
}

// ratios computes the targets the issue asks for.
func ratios(res *Results) []Ratio {
	by := map[string]*DefenseResult{}
	for i := range res.Defenses {
		if res.Defenses[i].Error == "" || len(res.Defenses[i].Steps) > 0 {
			by[res.Defenses[i].Key] = &res.Defenses[i]
		}
	}
	synacks := func(k string) float64 {
		if d := by[k]; d != nil {
			return d.peakSynAcks()
		}
		return 0
	}
	div := func(a, b float64) float64 {
		if a == 0 || b == 0 || math.IsNaN(a/b) {
			return 0
		}
		return a / b
	}
	get := func(k string, f func(*DefenseResult) float64) float64 {
		if d := by[k]; d != nil {
			return f(d)
		}
		return 0
	}
	bulk := func(d *DefenseResult) float64 { return d.BulkMBps }
	conns := func(d *DefenseResult) float64 { return d.MaxConnsPerSec }
	cpu := func(d *DefenseResult) float64 {
		if st := d.maxStep(); st != nil {
			return st.CPUPerMSYN
		}
		return 0
	}
	calmP50 := func(d *DefenseResult) float64 {
		for _, st := range d.Steps {
			if st.Fraction == 0 {
				return st.ConnectP50Ms
			}
		}
		return 0
	}
	out := []Ratio{
		{Name: "syngate / kernel SYN cookies, new connections/s", Value: div(get("syngate", conns), get("kernel", conns)), Note: "target >= 1.0x"},
		{Name: "syngate CPU per flood SYN / XDP_TX ceiling's", Value: div(get("syngate", cpu), res.Ceilings.XDPTXCPUPerMSYN), Note: "top step; target <= 1.3x"},
		{Name: "syngate / kernel SYN cookies, CPU per flood SYN", Value: div(get("syngate", cpu), get("kernel", cpu)), Note: "top step; target <= 0.5x"},
		{Name: "syngate / nftables synproxy, peak SYN-ACKs/s", Value: div(synacks("syngate"), synacks("synproxy"))},
		{Name: "syngate / kernel SYN cookies, peak SYN-ACKs/s", Value: div(synacks("syngate"), synacks("kernel"))},
		{Name: "syngate peak SYN-ACKs/s / XDP_TX ceiling", Value: div(synacks("syngate"), res.Ceilings.XDPTXSynAckPPS), Note: "XDP_TX bounce seen at the client"},
		{Name: "syngate / no defense, bulk throughput", Value: div(get("syngate", bulk), get("none", bulk)), Note: "no defense = plain routing"},
		{Name: "syngate / nftables synproxy, new connections/s", Value: div(get("syngate", conns), get("synproxy", conns))},
	}
	if by["syngate"] != nil && by["kernel"] != nil {
		out = append(out, Ratio{Name: "syngate connect p50 added, no flood", Value: calmP50(by["syngate"]) - calmP50(by["kernel"]),
			Unit: "ms", Note: "against kernel SYN cookies direct; target < 0.3 ms"})
	}
	return out
}

// writeResults writes latest.json, latest.md and success.svg into dir.
func writeResults(dir string, res *Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create results dir: %w", err)
	}
	j, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	var md bytes.Buffer
	writeMarkdown(&md, res)
	for name, data := range map[string][]byte{
		"latest.json": append(j, '\n'),
		"latest.md":   md.Bytes(),
		"success.svg": successSVG(res),
	} {
		// Write beside, then rename: an interrupted run leaves the
		// previous results whole.
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func fmtMiB(v uint64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(v)/(1<<20))
}

// summaryRows is the main table: one row per defense, flood figures from
// the maximum step.
func summaryRows(res *Results) (header []string, rows [][]string) {
	header = []string{"defense", "legit ok @max", "connect p50/p99 ms", "request p50/p99 ms", "SYN-ACK/s @max (peak)", "CPU s/M SYN", "marginal CPU s/M SYN", "new conn/s", "bulk MB/s", "RSS/peak MiB"}
	for _, d := range res.Defenses {
		row := []string{d.Name}
		m := d.maxStep()
		if m == nil {
			row = append(row, "error: "+firstLine(d.Error))
			for len(row) < len(header) {
				row = append(row, "")
			}
			rows = append(rows, row)
			continue
		}
		rss := "kernel"
		if d.PeakRSSBytes > 0 {
			rss = fmtMiB(d.RSSBytes) + "/" + fmtMiB(d.PeakRSSBytes)
		}
		row = append(row,
			fmt.Sprintf("%.1f%%", 100*m.SuccessRate),
			fmt.Sprintf("%.1f/%.0f", m.ConnectP50Ms, m.ConnectP99Ms),
			fmt.Sprintf("%.1f/%.0f", m.RequestP50Ms, m.RequestP99Ms),
			fmt.Sprintf("%s (%s)", fmtRate(m.SynAcksPerSec), fmtRate(d.peakSynAcks())),
			fmt.Sprintf("%.2f", m.CPUPerMSYN),
			fmt.Sprintf("%.2f", m.CPUMarginalPerMSYN),
			fmtRate(d.MaxConnsPerSec),
			fmt.Sprintf("%.0f", d.BulkMBps),
			rss,
		)
		rows = append(rows, row)
	}
	return header, rows
}

// stepRows lists every step of every defense.
func stepRows(res *Results) (header []string, rows [][]string) {
	header = []string{"defense", "flood offered", "flood sent/s", "legit ok", "connect p50/p99 ms", "request p50/p99 ms", "SYN-ACK/s", "CPU s/M SYN"}
	for _, d := range res.Defenses {
		for _, s := range d.Steps {
			cpu := "-"
			if s.FloodSent > 0 {
				cpu = fmt.Sprintf("%.2f", s.CPUPerMSYN)
			}
			rows = append(rows, []string{
				d.Name, fmt.Sprintf("%s (%.0f%%)", fmtRate(s.OfferedPPS), 100*s.Fraction), fmtRate(s.FloodPPS),
				fmt.Sprintf("%d/%d (%.1f%%)", s.Succeeded, s.Attempts, 100*s.SuccessRate),
				fmt.Sprintf("%.1f/%.0f", s.ConnectP50Ms, s.ConnectP99Ms),
				fmt.Sprintf("%.1f/%.0f", s.RequestP50Ms, s.RequestP99Ms),
				fmtRate(s.SynAcksPerSec), cpu,
			})
		}
	}
	return header, rows
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	if len(l) > 80 {
		l = l[:80] + "..."
	}
	return l
}

func ceilingLine(c Ceilings) string {
	s := fmt.Sprintf("flood generator max %s pps; XDP_DROP %s pps (floor %.2f busy CPU s/M SYN, %.2f softirq); XDP_TX %s pps, %s SYN-ACK/s seen at the client, %.2f CPU s/M SYN",
		fmtRate(c.FloodMaxPPS), fmtRate(c.XDPDropPPS), c.XDPDropCPUPerMSYN, c.XDPDropSoftirqPerMSYN, fmtRate(c.XDPTXPPS), fmtRate(c.XDPTXSynAckPPS), c.XDPTXCPUPerMSYN)
	if c.Error != "" {
		s += " (error: " + firstLine(c.Error) + ")"
	}
	return s
}

// printTable prints the results as aligned text.
func printTable(w io.Writer, res *Results) {
	text := func(header []string, rows [][]string) {
		width := make([]int, len(header))
		for i, h := range header {
			width[i] = len(h)
		}
		for _, r := range rows {
			for i, c := range r {
				width[i] = max(width[i], len(c))
			}
		}
		line := func(cells []string) {
			for i, c := range cells {
				fmt.Fprintf(w, "%-*s  ", width[i], c)
			}
			fmt.Fprintln(w)
		}
		line(header)
		sep := make([]string, len(header))
		for i := range sep {
			sep[i] = strings.Repeat("-", width[i])
		}
		line(sep)
		for _, r := range rows {
			line(r)
		}
	}
	fmt.Fprintf(w, "\nsyngate %s bench, %s, %s (%d cores), kernel %s%s\n", res.Syngate, res.Date, res.Machine.CPU, res.Machine.Cores, res.Machine.Kernel, map[bool]string{true: ", -quick"}[res.Quick])
	fmt.Fprintf(w, "ceilings: %s\n\n", ceilingLine(res.Ceilings))
	text(summaryRows(res))
	fmt.Fprintln(w)
	text(stepRows(res))
	fmt.Fprintln(w)
	for _, r := range res.Ratios {
		fmt.Fprintf(w, "%-58s %s\n", r.Name, fmtRatio(r))
	}
	for _, d := range res.Defenses {
		if d.Error != "" {
			fmt.Fprintf(w, "\n%s: %s\n", d.Name, d.Error)
		}
	}
	if dist := disturbed(res); len(dist) > 0 {
		fmt.Fprintf(w, "\nWARNING: the machine was not quiet, these figures are disturbed:\n  %s\n", strings.Join(dist, "\n  "))
	}
}

func fmtRatio(r Ratio) string {
	if r.Unit != "" {
		return fmt.Sprintf("%.2f %s", r.Value, r.Unit)
	}
	if r.Value == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", r.Value)
}

// writeMarkdown renders the results for the README.
func writeMarkdown(w io.Writer, res *Results) {
	table := func(header []string, rows [][]string) {
		fmt.Fprintf(w, "| %s |\n", strings.Join(header, " | "))
		fmt.Fprintf(w, "|%s\n", strings.Repeat(" --- |", len(header)))
		for _, r := range rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
		}
	}
	m := res.Machine
	run := "full run"
	if res.Quick {
		run = "quick run (-quick)"
	}
	fmt.Fprintf(w, "Benchmark of %s, %s of syngate %s: %s, %d cores, Linux %s, %s. Generated by `sudo go run ./bench`.\n\n", res.Date[:10], run, res.Syngate, m.CPU, m.Cores, m.Kernel, m.Go)
	fmt.Fprintf(w, "Ceilings of the path: %s.\n\n", ceilingLine(res.Ceilings))
	fmt.Fprintf(w, "Under the maximum flood (%.0f s windows, %d legitimate connections/s, %.0f s attempt timeout); new connections/s and bulk without flood:\n\n",
		res.Settings.FloodSeconds, res.Settings.LegitRate, res.Settings.ConnectTimeout)
	table(summaryRows(res))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every flood step:")
	fmt.Fprintln(w)
	table(stepRows(res))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | ratio |")
	fmt.Fprintln(w, "| --- | --- |")
	for _, r := range res.Ratios {
		fmt.Fprintf(w, "| %s | %s |\n", r.Name, fmtRatio(r))
	}
	fmt.Fprintln(w)
	if dist := disturbed(res); len(dist) > 0 {
		fmt.Fprintf(w, "**Disturbed**: other programs ran during these steps: %s.\n\n", strings.Join(dist, "; "))
	}
	fmt.Fprintln(w, "How each defense is set up:")
	fmt.Fprintln(w)
	for _, d := range res.Defenses {
		fmt.Fprintf(w, "- **%s**: %s", d.Name, d.How)
		if d.Error != "" {
			fmt.Fprintf(w, " (error: %s)", firstLine(d.Error))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Method:")
	fmt.Fprintln(w)
	for _, k := range []string{"lab", "flood", "legit", "synacks", "cpu", "conn_rate", "bulk", "memory", "xdp_ceilings"} {
		fmt.Fprintf(w, "- %s: %s\n", k, res.Method[k])
	}
}

// rerender reads a results file and writes latest.md and success.svg
// beside it (or into dir), without measuring anything.
func rerender(path, dir string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read results: %w", err)
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("parse results: %w", err)
	}
	if dir == "" {
		dir = filepath.Dir(path)
	}
	printTable(os.Stdout, &res)
	return writeResults(dir, &res)
}
