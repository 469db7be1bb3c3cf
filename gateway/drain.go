package gateway

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/proxy"
)

// drainReportInterval is how often a drain logs the connections still open.
const drainReportInterval = 5 * time.Second

// drainer is the drain state of a running gateway. Draining withdraws the
// VIPs (when BGP is on) and changes nothing on the data path: the router
// stops sending new connections, the open ones are served until they end.
type drainer struct {
	on     atomic.Bool
	ann    *announcer // nil without BGP
	ticker *time.Ticker
	since  time.Time
}

func (d *drainer) start(e *proxy.Engine, log *slog.Logger) {
	if d.on.Swap(true) {
		return
	}
	d.since = time.Now()
	if d.ann != nil {
		d.ann.drain()
	} else {
		log.Warn("drain: no bgp peers configured, nothing to withdraw; whatever steers traffic here must stop doing so")
	}
	d.ticker = time.NewTicker(drainReportInterval)
	log.Info("drain: VIPs withdrawn, serving the open connections", "open", e.Stats().Conns)
}

// tick fires while draining; a nil channel blocks forever otherwise.
func (d *drainer) tick() <-chan time.Time {
	if d.ticker == nil {
		return nil
	}
	return d.ticker.C
}

func (d *drainer) report(e *proxy.Engine, log *slog.Logger) {
	n := e.Stats().Conns
	log.Info("drain: connections still open", "open", n, "draining_for", time.Since(d.since).Round(time.Second))
	if n == 0 {
		d.ticker.Stop()
		d.ticker = nil
	}
}
