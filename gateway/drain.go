package gateway

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/control"
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

// handleDrain serves /v1/drain on the control socket: GET reads the drain
// state, POST starts a drain through req (Run's loop owns the drainer) and
// answers once it started. SIGUSR1 (Options.Drain) does the same.
func handleDrain(srv *control.Server, req chan<- chan struct{}, on *atomic.Bool, e *proxy.Engine) {
	state := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(control.Drain{Draining: on.Load(), Open: e.Stats().Conns})
	}
	srv.Handle("GET /v1/drain", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { state(w) }))
	srv.Handle("POST /v1/drain", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done := make(chan struct{})
		select {
		case req <- done:
		case <-r.Context().Done():
			return
		}
		select {
		case <-done:
		case <-r.Context().Done():
			return
		}
		state(w)
	}))
}
