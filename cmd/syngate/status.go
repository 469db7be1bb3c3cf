package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/syngate/syngate/control"
)

func cmdStatus(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "status", "status [-socket PATH] [-interval D] [-json]")
	socket := fs.String("socket", control.DefaultPath, "the daemon's control `socket` (config control.socket)")
	interval := fs.Duration("interval", time.Second, "measure rates over this `duration` (two reads); 0: no rates")
	asJSON := fs.Bool("json", false, "print JSON for scripts instead of tables")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c := control.NewClient(*socket)
	ctx, cancel := context.WithTimeout(ctx, *interval+10*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if *interval > 0 {
		select {
		case <-time.After(*interval):
		case <-ctx.Done():
			return ctx.Err()
		}
		cur, err := c.Status(ctx)
		if err != nil {
			return err
		}
		control.ComputeRates(st, cur)
		st = cur
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(e.stdout, st)
	return nil
}

// printStatus writes the status as an operator reads it: the daemon, its
// interfaces, then one table of services and one of backends.
func printStatus(w io.Writer, st *control.Status) {
	fmt.Fprintf(w, "syngate %s, pid %d, up %s\n", st.Version, st.PID, st.Time.Sub(st.Started).Round(time.Second))
	for _, in := range st.Interfaces {
		var drop, full, empty uint64
		for _, s := range in.Sockets {
			drop += s.RxDropped
			full += s.RxRingFull
			empty += s.FillRingEmpty
		}
		if in.Datapath == "tc" && len(in.Sockets) == 0 {
			// The TC program alone: the engine's packets come through a
			// ring buffer, not AF_XDP.
			fmt.Fprintf(w, "interface %s: datapath tc (tcx ingress, xdp %s), ring buffer to the engine\n", in.Name, in.XDPMode)
			continue
		}
		fmt.Fprintf(w, "interface %s: xdp %s, datapath %s, %d af_xdp sockets, drops: rx %d, rx ring full %d, fill ring empty %d\n",
			in.Name, in.XDPMode, in.Datapath, len(in.Sockets), drop, full, empty)
	}
	fmt.Fprintf(w, "flow table: %d of %d entries (%.1f%%)\n", st.FlowTable.Entries, st.FlowTable.Limit,
		100*float64(st.FlowTable.Entries)/float64(max(st.FlowTable.Limit, 1)))
	if r := st.Rates; r != nil {
		fmt.Fprintf(w, "xdp over %.1fs: %s SYN to engine/s, %s cookie SYN-ACKs/s in XDP, %s SYN dropped/s, %s spliced pkts/s\n",
			r.Interval, rate(r.XDP["xsk_syn"]), rate(r.XDP["tx_synack_cookie"]),
			rate(r.XDP["drop_syn_ratelimit"]+r.XDP["drop_syn_payload"]+r.XDP["drop_bad_flags"]),
			rate(r.XDP["fast_tx"]+r.XDP["fast_redirect"]+r.XDP["fast_tx_out_of_window"]+r.XDP["fast_redirect_out_of_window"]+
				r.XDP["fast_tc_redirect"]+r.XDP["fast_tc_redirect_neigh"]))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tLISTEN\tCOOKIES\tSYN Q\tACCEPT Q\tSYN/s\tSYN-ACK/s\tACK/s\tSPLICE/s\tOPENING\tSPLICED")
	for _, s := range st.Services {
		sr := control.ServiceRates{}
		have := false
		if st.Rates != nil {
			sr, have = st.Rates.Services[s.Name]
		}
		r := func(v float64) string {
			if !have {
				return "-"
			}
			return rate(v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%d/%d\t%d/%d\t%s\t%s\t%s\t%s\t%d\t%d\n",
			s.Name, s.Listen, s.CookiePolicy, s.CookieMode, s.Queues.Syn, s.Queues.SynLimit, s.Queues.Accept, s.Queues.AcceptLimit,
			r(sr.SYN), r(sr.SynAck), r(sr.ACK), r(sr.Splices), s.Conns.Opening, s.Conns.Spliced)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tSERVICE\tSOURCE\tHEALTH\tLAST PROBE\tLEARNED\tCONNECTS\tAVG CONNECT\tFAILURES\tLAST PROBE FAILURE")
	for _, s := range st.Services {
		for _, b := range s.Backends {
			probe := "never"
			if !b.LastProbe.IsZero() {
				probe = st.Time.Sub(b.LastProbe).Round(time.Second).String() + " ago"
			}
			lastFail := "-"
			if !b.LastFailure.IsZero() {
				lastFail = fmt.Sprintf("%s ago: %s", st.Time.Sub(b.LastFailure).Round(time.Second), b.LastFailureError)
			}
			learned := "-"
			if b.Learned != nil {
				learned = announceString(*b.Learned)
			}
			avg := "-"
			if b.Connects > 0 {
				avg = (time.Duration(b.ConnectSeconds / float64(b.Connects) * 1e9)).Round(time.Microsecond).String()
			}
			fails := failures(s.Counters.BackendFailures)
			if !b.LastLegFailure.IsZero() {
				fails += fmt.Sprintf(" (last: %s %s ago)", b.LastLegFailureReason, st.Time.Sub(b.LastLegFailure).Round(time.Second))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n",
				b.Addr, s.Name, b.Source, b.Health, probe, learned, b.Connects, avg, fails, lastFail)
		}
	}
	tw.Flush()
}

func rate(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func announceString(a control.Announce) string {
	ws := "none"
	if a.WScale >= 0 {
		ws = fmt.Sprint(a.WScale)
	}
	return fmt.Sprintf("mss %d ws %s sack %v ts %v", a.MSS, ws, a.SACK, a.Timestamps)
}

func failures(m map[string]uint64) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
