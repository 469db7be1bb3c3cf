package gateway

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syngate/syngate/bgp"
	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/spec"
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

// TestBGPReloadKeys: a reload applies the bgp peers (added, removed,
// changed) and refuses, naming them, what GoBGP takes only at start.
func TestBGPReloadKeys(t *testing.T) {
	parse := func(bgp string) *config.Config {
		t.Helper()
		cfg, err := config.Parse(strings.NewReader(`
interfaces: [{name: eth0}]
secret_file: /nonexistent/secret
services:
  - name: a
    listen: 192.0.2.10:80
    backend: 127.0.0.1:8080
` + bgp))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	const peerA = "    - {address: 198.51.100.1, asn: 65000}\n"
	global := "bgp:\n  local_asn: 65010\n  router_id: 192.0.2.1\n  peers:\n"
	base := parse(global + peerA)
	for _, tc := range []struct {
		name, bgp string
		want      []string
	}{
		{"same", global + peerA, nil},
		{"peer changed", global + "    - {address: 198.51.100.1, asn: 65001, password: s3cret, hold_time: 9s}\n", nil},
		{"peer added", global + peerA + "    - {address: 198.51.100.2, asn: 65000}\n", nil},
		{"peer replaced", global + "    - {address: 198.51.100.3, asn: 65000}\n", nil},
		{"asn", "bgp:\n  local_asn: 65011\n  router_id: 192.0.2.1\n  peers:\n" + peerA, []string{"bgp.local_asn"}},
		{"router id and restart time", "bgp:\n  local_asn: 65010\n  router_id: 192.0.2.2\n  restart_time: 30s\n  peers:\n" + peerA, []string{"bgp.router_id", "bgp.restart_time"}},
		{"bgp off", "", []string{"bgp.peers (turning BGP on or off)"}},
	} {
		next := parse(tc.bgp)
		got := changedRestartKeys(base, next)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: restart keys %v, want %v", tc.name, got, tc.want)
		}
		if same := reflect.DeepEqual(reloadable(base), reloadable(next)); !same {
			t.Errorf("%s: the catch-all refuses a bgp change", tc.name)
		}
	}
	// Turning BGP on takes a restart too.
	if got := changedRestartKeys(parse(""), base); !slices.Equal(got, []string{"bgp.peers (turning BGP on or off)"}) {
		t.Errorf("bgp on: restart keys %v", got)
	}
}

// fakeSpeaker records the peers it is given; fail refuses the next Update.
type fakeSpeaker struct {
	updates [][]bgp.Peer
	fail    error
}

func (f *fakeSpeaker) Update(c bgp.Config) error {
	f.updates = append(f.updates, c.Peers)
	if err := f.fail; err != nil {
		f.fail = nil
		return err
	}
	return nil
}

// TestReloadBGP: a reload gives the speaker the new peers, only when they
// changed; a speaker that refuses them gets the running ones back and the
// reload is refused.
func TestReloadBGP(t *testing.T) {
	a := netip.MustParseAddr("198.51.100.1")
	cur := config.BGP{LocalASN: 65010, Peers: []config.BGPPeer{{Address: a, ASN: 65000, HoldTime: 90 * time.Second}}}
	next := cur
	next.Peers = []config.BGPPeer{{Address: a, ASN: 65000, HoldTime: 9 * time.Second, Password: "s3cret"}}
	sp := &fakeSpeaker{}
	if err := reloadBGP(sp, cur, cur); err != nil || len(sp.updates) != 0 {
		t.Fatalf("unchanged: %v, %d updates", err, len(sp.updates))
	}
	if err := reloadBGP(sp, cur, next); err != nil || len(sp.updates) != 1 || sp.updates[0][0].HoldTime != 9*time.Second || sp.updates[0][0].Password != "s3cret" {
		t.Fatalf("changed peer: %v, updates %+v", err, sp.updates)
	}
	sp = &fakeSpeaker{fail: errors.New("no")}
	err := reloadBGP(sp, cur, next)
	if err == nil || len(sp.updates) != 2 || sp.updates[1][0].HoldTime != 90*time.Second {
		t.Fatalf("refused update: %v, updates %+v; want the running peers restored", err, sp.updates)
	}
	if err := reloadBGP(nil, cur, next); err != nil {
		t.Errorf("no speaker: %v", err)
	}
}
