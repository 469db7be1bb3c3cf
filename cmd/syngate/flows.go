package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/syngate/syngate/control"
)

func cmdFlows(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "flows", "flows [-socket PATH] [-service NAME] [-client ADDR] [-backend ADDR] [-limit N] [-json]")
	socket := fs.String("socket", control.DefaultPath, "the daemon's control `socket` (config control.socket)")
	var f control.Filter
	fs.StringVar(&f.Service, "service", "", "only the flows of the service `name`")
	fs.StringVar(&f.Client, "client", "", "only the flows of this client `ip` or ip:port")
	fs.StringVar(&f.Backend, "backend", "", "only the flows to this backend `ip` or ip:port")
	limit := fs.Int("limit", 1000, "list at most `n` flows (0: all); the total is always reported")
	asJSON := fs.Bool("json", false, "print JSON for scripts instead of a table: {\"total\": N, \"flows\": [...]}")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if *limit < 0 {
		fmt.Fprintln(e.stderr, "syngate flows: -limit must be 0 or more")
		return errUsage
	}
	list, err := control.NewClient(*socket).Flows(ctx, f, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	printFlows(e.stdout, list, time.Now())
	return nil
}

// printFlows writes one line per connection: both legs, its state and age,
// and each direction's packets, bytes and idle time.
func printFlows(w io.Writer, list *control.FlowList, now time.Time) {
	flows := list.Flows
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tCLIENT\tLISTEN\tSOURCE\tBACKEND\tSTATE\tAGE\tC->B PKTS\tC->B BYTES\tB->C PKTS\tB->C BYTES\tIDLE")
	for _, f := range flows {
		src := f.Source
		if src == "" {
			src = "-"
		}
		idle := "-"
		last := f.ToBackend.LastSeen
		if f.ToClient.LastSeen.After(last) {
			last = f.ToClient.LastSeen
		}
		if !last.IsZero() {
			idle = now.Sub(last).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n",
			f.Service, f.Client, f.Listen, src, f.Backend, f.State, now.Sub(f.Created).Round(time.Second),
			f.ToBackend.Packets, f.ToBackend.Bytes, f.ToClient.Packets, f.ToClient.Bytes, idle)
	}
	tw.Flush()
	if list.Total > len(flows) {
		fmt.Fprintf(w, "%d of %d flows (narrow with -service, -client, -backend, or -limit 0 for all)\n", len(flows), list.Total)
		return
	}
	fmt.Fprintf(w, "%d flows\n", len(flows))
}
