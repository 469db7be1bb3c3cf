// Package observability holds syngate's Grafana dashboard and Prometheus
// alerting rules, and the test that keeps them true to the exposition. It is
// a module of its own so that Prometheus's rule and PromQL parsers never
// enter the daemon's module graph.
package observability

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/proxy"
	"github.com/syngate/syngate/spec"
)

// exposition builds syngate's metrics the way the daemon does: the real
// registry, a real handshake engine's services (their label sets are the
// engine's), every XDP verdict the program defines, and AF_XDP sockets.
// Only the data plane underneath is fake: counter values do not matter
// here, names and label values do.
func exposition(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	jar, err := cookie.NewJar(make([]byte, 32), cookie.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := proxy.New(proxy.Config{
		Services: []spec.Service{{
			Name: "web", Listen: netip.MustParseAddrPort("192.0.2.10:80"), Backends: []spec.Backend{{Addr: netip.MustParseAddrPort("10.0.0.5:8080"), Weight: 1}},
			Sources: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
			Cookies: spec.CookiesAuto, OnOverflow: spec.OverflowDrop,
			Limits: spec.Limits{MaxSynBacklog: 16, SynAckRetries: 5, Backlog: 8, Somaxconn: 128},
		}},
		Jar: jar, Datapath: noFlows{}, Sender: noSender{},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := metrics.New("test", "abc")
	for _, s := range e.Services() {
		reg.AddService(s)
	}
	reg.SetDataplane(dataplane{e})
	if err := reg.Register(metrics.NewSocketCollector(sockets{})); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(metrics.NewRingCollector(rings{})); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(metrics.NewScaleoutCollector(scaleout{e})); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

type noFlows struct{}

func (noFlows) InstallFlow(flow.Key, flow.NAT) error { return nil }
func (noFlows) InstallTrackedFlow(flow.Key, flow.NAT, flow.Track) error {
	return nil
}
func (noFlows) RaiseSeqEnd(flow.Key, uint32) error { return flow.ErrNotFound }
func (noFlows) DeleteFlow(flow.Key) error          { return nil }
func (noFlows) IterateFlows(func(flow.Key, flow.State) bool) error {
	return nil
}
func (noFlows) LookupFlow(flow.Key) (flow.State, error) {
	return flow.State{}, flow.ErrNotFound
}
func (noFlows) SetService(spec.Entry) error            { return nil }
func (noFlows) DeleteService(netip.AddrPort) error     { return nil }
func (noFlows) Services() ([]spec.Entry, error)        { return nil, nil }
func (noFlows) AddLocal(netip.Addr) error              { return nil }
func (noFlows) DeleteLocal(netip.Addr) error           { return nil }
func (noFlows) Locals() ([]netip.Addr, error)          { return nil, nil }
func (noFlows) SetCookieKey(cookie.DataplaneKey) error { return nil }

type noSender struct{}

func (noSender) SendIP([]byte) error { return nil }

// dataplane reports every verdict as the gateway's adapter does.
type dataplane struct{ e *proxy.Engine }

func (d dataplane) Verdicts() ([]metrics.VerdictCount, error) {
	var out []metrics.VerdictCount
	for v := bpf.Verdict(0); v < bpf.NumVerdicts; v++ {
		out = append(out, metrics.VerdictCount{Verdict: v.Action().String(), Reason: v.String(), Packets: 1})
	}
	return out, nil
}

func (d dataplane) Flows() (metrics.FlowStats, error) {
	return metrics.FlowStats{Active: 2, Limit: 1024, Expired: d.e.Stats().Expired}, nil
}

// scaleout is a gateway with one BGP peer announcing one VIP.
type scaleout struct{ e *proxy.Engine }

func (scaleout) BGP() ([]metrics.BGPPeer, []netip.Prefix) {
	return []metrics.BGPPeer{{Address: netip.MustParseAddr("10.0.0.254"), State: "established", Established: true}},
		[]netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}
}
func (scaleout) Draining() bool         { return false }
func (s scaleout) ConnectionsOpen() int { return s.e.Stats().Conns }

type sockets struct{}

func (sockets) SocketStats() ([]metrics.SocketStats, error) {
	return []metrics.SocketStats{{Interface: "eth0", Queue: 0}}, nil
}

type rings struct{}

func (rings) RingStats() []metrics.RingStats { return []metrics.RingStats{{Interface: "veth0"}} }

// series are the label sets of one metric name as a query sees it: a
// histogram's _bucket, _sum and _count are series of their own.
func series(fams map[string]*dto.MetricFamily) map[string][]map[string]string {
	out := map[string][]map[string]string{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			ls := map[string]string{}
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = l.GetValue()
			}
			if f.GetType() == dto.MetricType_HISTOGRAM {
				out[name+"_sum"] = append(out[name+"_sum"], ls)
				out[name+"_count"] = append(out[name+"_count"], ls)
				for range m.GetHistogram().GetBucket() {
					bl := map[string]string{"le": "x"}
					for k, v := range ls {
						bl[k] = v
					}
					out[name+"_bucket"] = append(out[name+"_bucket"], bl)
				}
				continue
			}
			out[name] = append(out[name], ls)
		}
	}
	return out
}

// promql is Prometheus's own PromQL parser, with its default functions.
var promql = parser.NewParser(parser.Options{})

// generated are series Prometheus itself makes.
var generated = map[string]bool{"up": true}

// scrapeLabels are added by Prometheus, never in the exposition.
var scrapeLabels = map[string]bool{"instance": true, "job": true}

// checkExpr parses expr with the PromQL parser and checks that every
// selector names a metric of the exposition and that each of its label
// matchers selects at least one series (each alternative of a regex
// alternation separately, so a misspelt reason in "a|b" is caught).
func checkExpr(t errorer, where, expr string, have map[string][]map[string]string) {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %v\n%s", where, err, expr)
		return
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if generated[vs.Name] {
			return nil
		}
		ss, ok := have[vs.Name]
		if !ok {
			t.Errorf("%s: metric %s is not in syngate's exposition", where, vs.Name)
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName || scrapeLabels[m.Name] {
				continue
			}
			for _, v := range alternatives(m) {
				if !anyMatch(ss, m.Name, v, m) {
					t.Errorf("%s: %s{%s} matches no series (label values: %v)", where, vs.Name, m, values(ss, m.Name))
				}
			}
		}
		return nil
	})
}

var literalAlternation = regexp.MustCompile(`^[a-z0-9_]+(\|[a-z0-9_]+)*$`)

func alternatives(m *labels.Matcher) []string {
	if m.Type == labels.MatchRegexp && literalAlternation.MatchString(m.Value) {
		return strings.Split(m.Value, "|")
	}
	return []string{""}
}

func anyMatch(ss []map[string]string, name, alt string, m *labels.Matcher) bool {
	for _, s := range ss {
		v, ok := s[name]
		if !ok && m.Type != labels.MatchNotEqual && m.Type != labels.MatchNotRegexp {
			continue
		}
		if alt != "" {
			if v == alt {
				return true
			}
			continue
		}
		if m.Matches(v) {
			return true
		}
	}
	return false
}

func values(ss []map[string]string, name string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if v, ok := s[name]; ok && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func TestAlertRules(t *testing.T) {
	groups, errs := rulefmt.ParseFile("syngate-alerts.yml", false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	have := series(exposition(t))
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			checkExpr(t, "rule "+r.Alert, r.Expr, have)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %s: wants a severity label and a summary", r.Alert)
			}
		}
	}
	// The list: flood, cookie mode, accept queue, backend failures,
	// AF_XDP drops, flow table near full.
	// And since: blind RSTs, refused reloads.
	for _, want := range []string{"SyngateSynFlood", "SyngateCookieModeOn", "SyngateAcceptQueueOverflow", "SyngateBackendFailures", "SyngateAFXDPDrops", "SyngateFlowTableNearFull",
		"SyngateBlindRSTs", "SyngateReloadFailed"} {
		found := false
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				found = found || r.Alert == want
			}
		}
		if !found {
			t.Errorf("no rule %s", want)
		}
	}
	t.Logf("%d rules checked", n)
}

// grafanaVars are the dashboard's variables, replaced by what Grafana
// would put there before the expressions are parsed.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*", "$service", ".*")

func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("syngate-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	have := series(exposition(t))
	exprs := 0
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			checkExpr(t, "panel "+p.Title, grafanaVars.Replace(tg.Expr), have)
		}
	}
	for _, v := range d.Templating.List {
		// label_values(METRIC{...}, label): the metric must exist.
		if m := regexp.MustCompile(`^label_values\((\w+)`).FindStringSubmatch(v.Definition); m != nil {
			if _, ok := have[m[1]]; !ok {
				t.Errorf("variable %s: metric %s is not in the exposition", v.Name, m[1])
			}
		}
	}
	t.Logf("%d panels, %d queries checked", len(d.Panels), exprs)
}

// errorer is the part of testing.T checkExpr reports to.
type errorer interface {
	Helper()
	Errorf(format string, args ...any)
}

// failures records what checkExpr reports, to test the checker itself.
type failures struct{ msgs []string }

func (f *failures) Helper() {}
func (f *failures) Errorf(format string, args ...any) {
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}

// TestCheckerCatches makes sure the checks can fail: a misspelt metric and
// a label value no series has are both reported.
func TestCheckerCatches(t *testing.T) {
	have := series(exposition(t))
	for _, expr := range []string{
		`rate(syngate_syn_recieved_total[5m])`,
		`rate(syngate_xdp_packets_total{reason="tx_synack_cokie"}[5m])`,
		`rate(syngate_xdp_packets_total{reason=~"xsk_syn|tx_synack_cokie"}[5m])`,
		`syngate_backend_connect_seconds_bukket`,
	} {
		var ft failures
		checkExpr(&ft, "probe", expr, have)
		if len(ft.msgs) == 0 {
			t.Errorf("%s passed the check", expr)
		}
	}
}
