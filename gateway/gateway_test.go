package gateway

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/syngate/syngate/spec"

	"github.com/syngate/syngate/config"
)

func TestPortRangeConflict(t *testing.T) {
	for _, tc := range []struct {
		min, max uint16
		eph      string
		conflict bool
	}{
		{16384, 32767, "32768\t60999\n", false},
		{32768, 60999, "32768\t60999\n", true},
		{1024, 32768, "32768 60999", true},
		{60999, 65535, "32768 60999", true},
		{61000, 65535, "32768 60999", false},
		{1, 2, "garbage", false},
	} {
		err := portRangeConflict(tc.min, tc.max, tc.eph)
		if (err != nil) != tc.conflict {
			t.Errorf("%d-%d vs %q: err = %v, want conflict %v", tc.min, tc.max, tc.eph, err, tc.conflict)
		}
	}
}

// TestResolveSources: the config's services reach the engine as config
// made them (syn.* copied into each one's limits), with "source from the
// route" resolved, and the config left as it was.
func TestResolveSources(t *testing.T) {
	cfg, err := config.Parse(strings.NewReader(`
interfaces: [{name: eth0}]
secret_file: /nonexistent/secret
syn: {cookies: always, max_syn_backlog: 100, somaxconn: 50}
services:
  - name: a
    listen: 192.0.2.10:80
    backend: 127.0.0.1:8080
    backlog: 70
    on_overflow: reset
    cookies: never
    announce: {mss: 1400}
  - name: b
    listen: 192.0.2.10:81
    backend: 127.0.0.1:8081
    source: 127.0.0.2
`))
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := resolveSources(cfg.Services)
	if err != nil {
		t.Fatal(err)
	}
	a, b := svcs[0], svcs[1]
	if len(a.Sources) != 1 || a.Sources[0] != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("source from the route to 127.0.0.1 = %v", a.Sources)
	}
	if len(cfg.Services[0].Sources) != 0 {
		t.Errorf("the config's service changed: sources %v", cfg.Services[0].Sources)
	}
	want := spec.Limits{Backlog: 70, Somaxconn: 50, MaxSynBacklog: 100, SynAckRetries: spec.DefaultSynAckRetries, PeerCookieChecks: spec.DefaultPeerCookieChecks}
	if a.Cookies != spec.CookiesNever || a.OnOverflow != spec.OverflowReset || a.Limits != want {
		t.Errorf("service a: cookies %s, overflow %s, limits %+v; want never, reset, %+v", a.Cookies, a.OnOverflow, a.Limits, want)
	}
	if a.Announce.MSS == nil || *a.Announce.MSS != 1400 || a.Announce.WindowScale != nil {
		t.Errorf("service a announce = %+v", a.Announce)
	}
	if len(b.Sources) != 1 || b.Sources[0] != netip.MustParseAddr("127.0.0.2") || b.Cookies != spec.CookiesAlways {
		t.Errorf("service b = %+v", b)
	}
}

// TestSourcesMustBeLocal: a source address the gateway does not have is
// refused at start (the backend's answers would never reach it), naming it.
func TestSourcesMustBeLocal(t *testing.T) {
	if err := checkLocal([]netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.9")}); err != nil {
		t.Errorf("loopback addresses refused: %v", err)
	}
	err := checkLocal([]netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.123")})
	if err == nil || !strings.Contains(err.Error(), "source 192.0.2.123 is not an address of this gateway") {
		t.Errorf("a foreign source address: %v, want it named as not the gateway's", err)
	}
}

func TestChangedRestartKeys(t *testing.T) {
	parse := func(extra string) *config.Config {
		t.Helper()
		cfg, err := config.Parse(strings.NewReader(`
interfaces: [{name: eth0}]
secret_file: /nonexistent/secret
` + extra + `
services:
  - name: a
    listen: 192.0.2.10:80
    backend: 127.0.0.1:8080
`))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	base := parse("")
	for _, tc := range []struct {
		extra string
		want  []string
	}{
		{"", nil},
		// Live: filters, timeouts, queue settings (services are rebuilt).
		{"filters: {drop_bad_flags: false, rate_limit: 100}\nflows: {established_timeout: 1h, close_timeout: 5s}\nbackend: {connect_timeout: 1s, probe_interval: 5s}\nsyn: {cookies: always, somaxconn: 10}", nil},
		{"backend: {ports: 20000-29999}", []string{"backend.ports"}},
		{"flows: {max: 1024}\nmetrics: {listen: off}", []string{"metrics.listen", "flows.max"}},
		{"bpffs: off\ncontrol: {socket: /tmp/x.sock, mode: \"0660\"}", []string{"bpffs", "control.socket", "control.mode"}},
		{"syn: {key_rotation: 30s}\nbackend: {max_pending: 1000, port_quiet_time: 1s}", []string{"syn.key_rotation", "backend.port_quiet_time", "backend.max_pending"}},
		{"peers: [198.51.100.66]", []string{"peers"}},
	} {
		next := parse(tc.extra)
		got := changedRestartKeys(base, next)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: restart keys %v, want %v", tc.extra, got, tc.want)
		}
		// What is neither applied nor named differs exactly when a named
		// key does: the catch-all refuses nothing a reload applies.
		if same := reflect.DeepEqual(reloadable(base), reloadable(next)); same != (len(tc.want) == 0) {
			t.Errorf("%q: reloadable parts equal %v, restart keys %v", tc.extra, same, got)
		}
	}
	other := parse("")
	other.Interfaces = append(other.Interfaces, config.Interface{Name: "eth1", Mode: config.XDPAuto})
	other.SecretFile = "/elsewhere"
	if got := changedRestartKeys(base, other); !slices.Equal(got, []string{"interfaces", "secret_file"}) {
		t.Errorf("interfaces and secret: %v", got)
	}
}
