package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syngate/syngate/spec"
)

func TestExampleFile(t *testing.T) {
	cfg, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Interfaces; len(got) != 1 || got[0].Name != "eth0" || got[0].Mode != XDPAuto || got[0].Datapath != DatapathAuto {
		t.Errorf("interfaces = %+v", got)
	}
	if len(cfg.Services) != 3 {
		t.Fatalf("services = %d, want 3", len(cfg.Services))
	}
	app := cfg.Services[2]
	want := []spec.Backend{{Addr: netip.MustParseAddrPort("10.0.0.6:25"), Weight: 1}, {Addr: netip.MustParseAddrPort("10.0.0.7:25"), Weight: 2}}
	if len(app.Backends) != 2 || app.Backends[0] != want[0] || app.Backends[1] != want[1] || app.Hash != spec.HashTuple ||
		app.ProxyProtocol != spec.ProxyV2 || app.OnNoBackend != spec.NoBackendReset {
		t.Errorf("app = %+v", app)
	}
	if h := app.HealthCheck; h != (spec.HealthCheck{Type: spec.CheckTCP, Interval: 5 * time.Second, Timeout: 2 * time.Second, Rise: 2, Fall: 3, Path: "/", Status: 200}) {
		t.Errorf("app health check = %+v", h)
	}
	if web := cfg.Services[0]; web.HealthCheck != app.HealthCheck || web.ProxyProtocol != spec.ProxyOff || web.Hash != spec.HashTuple {
		t.Errorf("web's pool defaults = %+v", web)
	}
	web := cfg.Services[0]
	if web.Listen != netip.MustParseAddrPort("192.0.2.10:80") || web.Backends[0].Addr != netip.MustParseAddrPort("10.0.0.5:8080") || len(web.Backends) != 1 || web.Backends[0].Weight != 1 {
		t.Errorf("web addresses = %v -> %v", web.Listen, web.Backends)
	}
	if len(web.Sources) != 1 || web.Sources[0] != netip.MustParseAddr("10.0.0.1") || web.Limits.Backlog != 1024 || web.OnOverflow != spec.OverflowDrop {
		t.Errorf("web = %+v", web)
	}
	if web.Announce.MSS == nil || *web.Announce.MSS != 1460 || *web.Announce.WindowScale != 7 || !*web.Announce.SACK || !*web.Announce.Timestamps {
		t.Errorf("web announce = %+v", web.Announce)
	}
	web6 := cfg.Services[1]
	if web6.Listen != netip.MustParseAddrPort("[2001:db8::10]:443") || len(web6.Sources) != 0 || web6.Announce.MSS != nil {
		t.Errorf("web6 = %+v", web6)
	}
	if web6.Cookies != spec.CookiesAuto || web6.Limits.Backlog != spec.DefaultBacklog {
		t.Errorf("web6 defaults = %+v", web6)
	}
	// The example documents every default: it must equal the defaults.
	if cfg.SYN != (SYN{Cookies: spec.CookiesAuto, MaxSynBacklog: 4096, SynAckRetries: 5, Somaxconn: 4096, KeyRotation: time.Minute, PeerCookieChecks: 10000}) {
		t.Errorf("syn = %+v", cfg.SYN)
	}
	min := mustParse(t, minimal)
	if cfg.Backend != min.Backend || cfg.Flows != min.Flows || cfg.Filters != min.Filters || cfg.Metrics != min.Metrics || cfg.BPFFS != min.BPFFS {
		t.Errorf("example.yaml and defaults differ:\n%+v %+v %+v\n%+v %+v %+v", cfg.Backend, cfg.Flows, cfg.Filters, min.Backend, min.Flows, min.Filters)
	}
}

const minimal = `
interfaces: [{name: veth0}]
secret_file: /nonexistent/syngate-test/secret
services:
  - name: a
    listen: 10.1.0.1:80
    backend: 10.2.0.2:8080
`

func mustParse(t *testing.T, s string) *Config {
	t.Helper()
	cfg, err := Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestDefaults(t *testing.T) {
	cfg := mustParse(t, minimal)
	s := cfg.Services[0]
	if s.Limits.Backlog != 1024 || s.OnOverflow != spec.OverflowDrop || s.Cookies != spec.CookiesAuto || len(s.Sources) != 0 || s.RateLimitExempt {
		t.Errorf("service defaults = %+v", s)
	}
	if cfg.Interfaces[0].Mode != XDPAuto || cfg.Interfaces[0].Datapath != DatapathAuto || cfg.Metrics.Listen != "127.0.0.1:9420" || cfg.BPFFS != DefaultBPFFS {
		t.Errorf("defaults = %+v", cfg)
	}
	if b := cfg.Backend; b.ConnectTimeout != 3*time.Second || b.PortMin != 16384 || b.PortMax != 32767 || b.MaxPending != 65536 {
		t.Errorf("backend defaults = %+v", b)
	}
	if f := cfg.Filters; !f.DropSynPayload || !f.DropBadFlags || f.RateLimit != 0 || f.PrefixLenV4 != 24 || f.PrefixLenV6 != 64 {
		t.Errorf("filter defaults = %+v", f)
	}
	if got := s.Limits.AcceptQueue(); got != 1024 {
		t.Errorf("effective backlog = %d", got)
	}
}

func TestPoolShorthandAndWeights(t *testing.T) {
	cfg, err := Parse(strings.NewReader(`interfaces: [{name: veth0}]
secret_file: /nonexistent/x
services:
  - name: a
    listen: 10.1.0.1:80
    backends: [10.2.0.2:80, {address: 10.2.0.3:80, weight: 0}, {address: 10.2.0.4:80}]
    health_check: {interval: 1s}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Services[0]
	if len(s.Backends) != 3 || s.Backends[0].Weight != 1 || s.Backends[1].Weight != 0 || s.Backends[2].Weight != 1 {
		t.Errorf("backends %+v: want weights 1 (default), 0, 1", s.Backends)
	}
	if s.HealthCheck.Interval != time.Second || s.HealthCheck.Timeout != time.Second {
		t.Errorf("health check %+v: the timeout defaults to min(2s, interval)", s.HealthCheck)
	}
}

func TestSomaxconnCapsBacklog(t *testing.T) {
	cfg := mustParse(t, minimal+"    backlog: 5000\nsyn: {somaxconn: 128}\n")
	if got := cfg.Services[0].Limits.AcceptQueue(); got != 128 {
		t.Errorf("effective backlog = %d, want min(5000, 128)", got)
	}
}

func TestServiceCookieOverride(t *testing.T) {
	cfg := mustParse(t, minimal+"    cookies: never\nsyn: {cookies: always}\n")
	if cfg.SYN.Cookies != spec.CookiesAlways || cfg.Services[0].Cookies != spec.CookiesNever {
		t.Errorf("cookies global %s service %s", cfg.SYN.Cookies, cfg.Services[0].Cookies)
	}
}

// TestErrors checks that each mistake is reported with the message an
// operator needs, including the line where the file says so.
func TestErrors(t *testing.T) {
	svc := func(extra string) string {
		return "interfaces: [{name: veth0}]\nsecret_file: /nonexistent/x\nservices:\n  - name: a\n    listen: 10.1.0.1:80\n    backend: 10.2.0.2:8080\n" + extra
	}
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"empty", "", []string{"empty file"}},
		{"unknown top key", svc("colour: blue\n"), []string{"line 7: unknown key `colour` at the top level (known keys: backend, bgp, bpffs,"}},
		{"unknown service key", svc("    bakclog: 5\n"), []string{"line 7: unknown key `bakclog` in services.0 (did you mean `backlog`?)"}},
		{"wrong type", svc("    backlog: lots\n"), []string{"line 7: services.0.backlog: `lots` is not an integer"}},
		{"backlog zero", svc("    backlog: 0\n"), []string{"line 7: services.0.backlog: 0 out of range"}},
		{"port zero", strings.Replace(svc(""), "10.1.0.1:80", "10.1.0.1:0", 1), []string{"line 5: services.0.listen: port 0 out of range"}},
		{"port too big", strings.Replace(svc(""), "10.2.0.2:8080", "10.2.0.2:70000", 1), []string{"line 6", "port 70000 out of range"}},
		{"not an address", strings.Replace(svc(""), "10.1.0.1:80", "web.example:80", 1), []string{"\"web.example\" is not an IP address"}},
		{"bare v6", strings.Replace(svc(""), "10.1.0.1:80", "2001:db8::1:80", 1), []string{"want ip:port, or [ipv6]:port"}},
		{"family mismatch", strings.Replace(svc(""), "10.2.0.2:8080", "'[2001:db8::2]:8080'", 1), []string{"different address families"}},
		{"duplicate listener", svc("  - name: b\n    listen: 10.1.0.1:80\n    backend: 10.2.0.3:80\n"), []string{"line 8: services.1.listen: 10.1.0.1:80 is already the listener of services[0]"}},
		{"duplicate name", svc("  - name: a\n    listen: 10.1.0.1:81\n    backend: 10.2.0.3:80\n"), []string{"\"a\" already names services[0]"}},
		{"bad overflow", svc("    on_overflow: explode\n"), []string{"want drop or reset"}},
		{"bad cookies", svc("syn: {cookies: sometimes}\n"), []string{"want never, auto or always"}},
		{"bad xdp mode", strings.Replace(svc(""), "{name: veth0}", "{name: veth0, xdp_mode: turbo}", 1), []string{"want native, generic or auto"}},
		{"bad datapath", strings.Replace(svc(""), "{name: veth0}", "{name: veth0, datapath: skb}", 1), []string{"interfaces.0.datapath", "want xdp, tc or auto"}},
		{"no interfaces", strings.Replace(svc(""), "interfaces: [{name: veth0}]", "interfaces: []", 1), []string{"at least one interface"}},
		{"no services", "interfaces: [{name: eth0}]\n", []string{"at least one service"}},
		{"retries", svc("syn: {synack_retries: 11}\n"), []string{"11 out of range 0-10"}},
		{"mss", svc("    announce: {mss: 100}\n"), []string{"100 out of range 536-65495"}},
		{"wscale", svc("    announce: {window_scale: 15}\n"), []string{"15 out of range 0-14"}},
		{"duration", svc("syn: {key_rotation: soon}\n"), []string{"line 7: syn.key_rotation: `soon` is not a duration"}},
		{"ports", svc("backend: {ports: 9000-8000}\n"), []string{"want a range like"}},
		{"metrics", svc("metrics: {listen: localhost}\n"), []string{"metrics.listen"}},
		{"source not an address", svc("    source: gateway\n"), []string{"line 7: services.0.source", "ParseAddr"}},
		{"source family", svc("    source: 2001:db8::1\n"), []string{"different address families"}},
		{"source prefix too big", svc("    source: 10.2.0.0/16\n"), []string{"holds 65536 addresses; at most 256"}},
		{"source list entry", svc("    source: [10.2.0.1, 10.2.0.x]\n"), []string{"services.0.source.1"}},
		{"source map", svc("    source: {a: b}\n"), []string{"want an address, a prefix or a list"}},
		{"several at once", svc("    backlog: 0\n    on_overflow: x\n"), []string{"backlog: 0 out of range", "want drop or reset"}},
		{"backend and backends", svc("    backends: [10.2.0.3:80]\n"), []string{"set backend or backends, not both"}},
		{"no backend", "interfaces: [{name: veth0}]\nsecret_file: /nonexistent/x\nservices:\n  - name: a\n    listen: 10.1.0.1:80\n", []string{"services.0.backend: required"}},
		{"backend twice", strings.Replace(svc(""), "    backend: 10.2.0.2:8080\n", "    backends: [10.2.0.2:8080, {address: 10.2.0.2:8080}]\n", 1), []string{"services.0.backends.1: 10.2.0.2:8080 listed twice"}},
		{"weight", strings.Replace(svc(""), "    backend: 10.2.0.2:8080\n", "    backends: [{address: 10.2.0.2:8080, weight: 1001}]\n", 1), []string{"services.0.backends.0.weight: 1001 out of range 0-1000"}},
		{"pool family", strings.Replace(svc(""), "    backend: 10.2.0.2:8080\n", "    backends: [10.2.0.2:8080, '[2001:db8::2]:80']\n", 1), []string{"different address families"}},
		{"hash", svc("    hash: random\n"), []string{"want tuple or address"}},
		{"proxy protocol", svc("    proxy_protocol: v3\n"), []string{"want off, v1 or v2"}},
		{"no backend policy", svc("    on_no_backend: queue\n"), []string{"want reset or drop"}},
		{"check type", svc("    health_check: {type: ping}\n"), []string{"want tcp, http or off"}},
		{"check fall", svc("    health_check: {fall: 0}\n"), []string{"health_check.fall: 0 out of range"}},
		{"check path", svc("    health_check: {type: http, path: 'a b'}\n"), []string{"health_check.path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.yaml))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSecretFileChecks(t *testing.T) {
	dir := t.TempDir()
	conf := func(path string) string {
		return strings.Replace(minimal, "/nonexistent/syngate-test/secret", path, 1)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, make([]byte, 32), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(strings.NewReader(conf(open))); err == nil || !strings.Contains(err.Error(), "readable by group or others") {
		t.Errorf("world-readable secret: err = %v", err)
	}
	if _, err := Parse(strings.NewReader(conf(dir))); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory as secret: err = %v", err)
	}
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, make([]byte, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(strings.NewReader(conf(good))); err != nil {
		t.Errorf("0600 secret: %v", err)
	}
	if os.Geteuid() != 0 {
		if err := os.Chmod(good, 0o000); err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(strings.NewReader(conf(good))); err == nil || !strings.Contains(err.Error(), "unreadable") {
			t.Errorf("unreadable secret: err = %v", err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want a not-exist error that is not ErrInvalid", err)
	}
}

func TestTooLarge(t *testing.T) {
	big := minimal + "#" + strings.Repeat("x", maxFileSize) + "\n"
	if _, err := Parse(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(data))
	f.Add(minimal)
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := Parse(strings.NewReader(s))
		if err == nil && (len(cfg.Services) == 0 || len(cfg.Interfaces) == 0) {
			t.Fatalf("accepted a config without services or interfaces")
		}
	})
}

func TestBGP(t *testing.T) {
	cfg := mustParse(t, minimal+`
bgp:
  local_asn: 65010
  router_id: 10.0.0.1
  peers:
    - address: 10.0.0.254
      asn: 65000
      hold_time: 9s
    - address: "2001:db8::fe"
      asn: 65000
      password: s3cret
`)
	b := cfg.BGP
	if b.LocalASN != 65010 || b.RouterID != netip.MustParseAddr("10.0.0.1") || b.RestartTime != DefaultBGPRestartTime || len(b.Peers) != 2 {
		t.Fatalf("bgp = %+v", b)
	}
	if p := b.Peers[0]; p.Port != 179 || p.HoldTime != 9*time.Second || p.Keepalive != 3*time.Second || p.ConnectRetry != DefaultBGPConnectRetry {
		t.Errorf("peer 0 = %+v", p)
	}
	if p := b.Peers[1]; p.Password != "s3cret" || p.HoldTime != DefaultBGPHoldTime || p.Keepalive != 30*time.Second {
		t.Errorf("peer 1 = %+v", p)
	}
	if len(mustParse(t, minimal).BGP.Peers) != 0 {
		t.Error("peers without a bgp section")
	}
	for _, bad := range []string{
		"bgp: {peers: [{address: 10.0.0.254, asn: 65000}]}",                                               // no local ASN, router ID
		"bgp: {local_asn: 1, router_id: 10.0.0.1, peers: [{address: 10.0.0.254}]}",                        // no peer ASN
		"bgp: {local_asn: 1, router_id: '::1', peers: [{address: 10.0.0.254, asn: 2}]}",                   // v6 router ID
		"bgp: {local_asn: 1, router_id: 10.0.0.1, peers: [{address: 10.0.0.254, asn: 2, hold_time: 1s}]}", // hold < 3s
		"bgp: {local_asn: 1, router_id: 10.0.0.1, peers: [{address: 10.0.0.254, asn: 2, hold_time: 9s, keepalive: 4s}]}",
		"bgp: {local_asn: 1, router_id: 10.0.0.1, peers: [{address: 10.0.0.254, asn: 2}, {address: 10.0.0.254, asn: 3}]}",
	} {
		if _, err := Parse(strings.NewReader(minimal + bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestControlSocket(t *testing.T) {
	cfg := mustParse(t, minimal)
	if cfg.Control != (Control{Socket: DefaultControlSocket, Mode: 0o600}) {
		t.Errorf("control defaults = %+v", cfg.Control)
	}
	cfg = mustParse(t, minimal+"control: {socket: /tmp/x.sock, mode: 0660}\n")
	if cfg.Control != (Control{Socket: "/tmp/x.sock", Mode: 0o660}) {
		t.Errorf("control = %+v", cfg.Control)
	}
	for _, bad := range []string{"control: {socket: rel.sock}\n", "control: {mode: \"0666\"}\n"} {
		if _, err := Parse(strings.NewReader(minimal + bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestSources: "source" takes one address, a list, or prefixes (every
// address of a prefix), in file order without duplicates.
func TestSources(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"source: 10.2.0.1", "[10.2.0.1]"},
		{"source: [10.2.0.1, 10.2.0.9]", "[10.2.0.1 10.2.0.9]"},
		{"source: 10.2.0.4/30", "[10.2.0.4 10.2.0.5 10.2.0.6 10.2.0.7]"},
		{"source: [10.2.0.5, 10.2.0.4/31]", "[10.2.0.5 10.2.0.4]"},
		{"source:\n      - 10.2.0.1\n      - 10.2.0.2/32", "[10.2.0.1 10.2.0.2]"},
	} {
		cfg := mustParse(t, minimal+"    "+tt.yaml+"\n")
		if got := fmt.Sprint(cfg.Services[0].Sources); got != tt.want {
			t.Errorf("%q: sources %s, want %s", tt.yaml, got, tt.want)
		}
	}
	cfg := mustParse(t, strings.NewReplacer("10.1.0.1:80", "'[2001:db8::1]:80'", "10.2.0.2:8080", "'[2001:db8::2]:8080'").Replace(minimal)+"    source: 2001:db8::1:0/126\n")
	if got := len(cfg.Services[0].Sources); got != 4 {
		t.Errorf("IPv6 /126: %d sources, want 4", got)
	}
}

func TestPeers(t *testing.T) {
	cfg := mustParse(t, minimal+"peers: [198.51.100.66, \"2001:db8::2\"]\n")
	if len(cfg.Peers) != 2 || cfg.Peers[0] != netip.MustParseAddr("198.51.100.66") || cfg.Peers[1] != netip.MustParseAddr("2001:db8::2") {
		t.Errorf("peers = %v", cfg.Peers)
	}
	if _, err := Parse(strings.NewReader(minimal + "peers: [nonsense]\n")); err == nil || !strings.Contains(err.Error(), "peers.0") {
		t.Errorf("bad peer: %v", err)
	}
}

func TestRateLimitExempt(t *testing.T) {
	cfg := mustParse(t, minimal+"    rate_limit_exempt: true\n")
	if !cfg.Services[0].RateLimitExempt {
		t.Errorf("rate_limit_exempt: true gave %+v", cfg.Services[0])
	}
	if _, err := Parse(strings.NewReader(minimal + "    rate_limit_exempt: sometimes\n")); err == nil || !strings.Contains(err.Error(), "rate_limit_exempt") {
		t.Errorf("a non-boolean rate_limit_exempt: %v", err)
	}
}
