package config

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/syngate/syngate/spec"
	"go.yaml.in/yaml/v3"
)

// file is the YAML shape. Values stay strings where a parse error must name
// the line: the validator converts them into Config.
type file struct {
	Interfaces []struct {
		Name     string `yaml:"name"`
		XDPMode  string `yaml:"xdp_mode"`
		Datapath string `yaml:"datapath"`
		CPUs     []int  `yaml:"cpus"`
	} `yaml:"interfaces"`
	SecretFile string `yaml:"secret_file"`
	BPFFS      string `yaml:"bpffs"`
	Metrics    struct {
		Listen *string `yaml:"listen"`
	} `yaml:"metrics"`
	Control struct {
		Socket string `yaml:"socket"`
		Mode   string `yaml:"mode"`
	} `yaml:"control"`
	SYN struct {
		Cookies       string         `yaml:"cookies"`
		MaxSynBacklog *int           `yaml:"max_syn_backlog"`
		SynAckRetries *int           `yaml:"synack_retries"`
		Somaxconn     *int           `yaml:"somaxconn"`
		KeyRotation   *time.Duration `yaml:"key_rotation"`
		PeerCookies   *int           `yaml:"peer_cookie_checks"`
	} `yaml:"syn"`
	Backend struct {
		ConnectTimeout *time.Duration `yaml:"connect_timeout"`
		ProbeInterval  *time.Duration `yaml:"probe_interval"`
		Ports          string         `yaml:"ports"`
		PortQuietTime  *time.Duration `yaml:"port_quiet_time"`
		MaxPending     *int           `yaml:"max_pending"`
	} `yaml:"backend"`
	Flows struct {
		Max                *int           `yaml:"max"`
		EstablishedTimeout *time.Duration `yaml:"established_timeout"`
		CloseTimeout       *time.Duration `yaml:"close_timeout"`
		ResetTimeout       *time.Duration `yaml:"reset_timeout"`
	} `yaml:"flows"`
	Filters struct {
		DropSynPayload *bool   `yaml:"drop_syn_payload"`
		DropBadFlags   *bool   `yaml:"drop_bad_flags"`
		RateLimit      *uint32 `yaml:"rate_limit"`
		RateBurst      *uint32 `yaml:"rate_burst"`
		PrefixLenV4    *int    `yaml:"prefix_len_v4"`
		PrefixLenV6    *int    `yaml:"prefix_len_v6"`
	} `yaml:"filters"`
	Services []serviceFile `yaml:"services"`
	BGP      bgpFile       `yaml:"bgp"`
	Peers    []string      `yaml:"peers"`
}

type serviceFile struct {
	Name            string          `yaml:"name"`
	Listen          string          `yaml:"listen"`
	Backend         string          `yaml:"backend"`
	Backends        []backendFile   `yaml:"backends"`
	Hash            string          `yaml:"hash"`
	ProxyProtocol   string          `yaml:"proxy_protocol"`
	OnNoBackend     string          `yaml:"on_no_backend"`
	HealthCheck     healthCheckFile `yaml:"health_check"`
	Source          addrList        `yaml:"source"`
	Backlog         *int            `yaml:"backlog"`
	OnOverflow      string          `yaml:"on_overflow"`
	Cookies         string          `yaml:"cookies"`
	RateLimitExempt bool            `yaml:"rate_limit_exempt"`
	Announce        struct {
		MSS         *uint16 `yaml:"mss"`
		WindowScale *uint8  `yaml:"window_scale"`
		SACK        *bool   `yaml:"sack"`
		Timestamps  *bool   `yaml:"timestamps"`
	} `yaml:"announce"`
}

// Defaults, documented on the Config fields and in README.md.
const (
	DefaultSecretFile    = "/var/lib/syngate/secret"
	DefaultBPFFS         = "/sys/fs/bpf/syngate"
	DefaultMetricsListen = "127.0.0.1:9420"
	DefaultControlSocket = "/run/syngate/control.sock"
	DefaultKeyRotation   = 60 * time.Second
	// MaxSources bounds a gateway's source addresses (the XDP program's
	// table of local addresses).
	MaxSources = 256
)

// hardMaxEntries bounds every preallocated table, so a typo cannot ask for
// gigabytes of memory at start.
const hardMaxEntries = 1 << 24

var namePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

type validator struct {
	lines map[string]int
	errs  []lineError
	// typeLines are the lines with a type error: the value there was not
	// decoded, so a semantic complaint about it would only repeat it.
	typeLines map[int]bool
}

// lineError is one problem, at a line of the file (0: no line).
type lineError struct {
	line int
	msg  string
}

func (e lineError) String() string {
	if e.line == 0 {
		return e.msg
	}
	return fmt.Sprintf("line %d: %s", e.line, e.msg)
}

// errorf records a problem at the YAML path, naming its line when known.
func (v *validator) errorf(path, format string, args ...any) {
	line := v.lines[path]
	if line != 0 && v.typeLines[line] {
		return
	}
	v.add(line, path+": "+fmt.Sprintf(format, args...))
}

// add records a problem at a line.
func (v *validator) add(line int, msg string) {
	v.errs = append(v.errs, lineError{line: line, msg: msg})
}

// report joins the problems in file order, those without a line last.
func (v *validator) report() string {
	sort.SliceStable(v.errs, func(i, j int) bool {
		a, b := v.errs[i].line, v.errs[j].line
		if a == 0 || b == 0 {
			return a != 0 && b == 0
		}
		return a < b
	})
	out := make([]string, len(v.errs))
	for i, e := range v.errs {
		out[i] = e.String()
	}
	return strings.Join(out, "\n  ")
}

func (v *validator) build(f *file) *Config {
	c := &Config{
		SecretFile: or(f.SecretFile, DefaultSecretFile),
		BPFFS:      or(f.BPFFS, DefaultBPFFS),
	}
	v.interfaces(f, c)
	v.secret(c.SecretFile)
	c.Metrics.Listen = DefaultMetricsListen
	if f.Metrics.Listen != nil {
		c.Metrics.Listen = *f.Metrics.Listen
		if c.Metrics.Listen != "off" {
			if _, err := netip.ParseAddrPort(c.Metrics.Listen); err != nil {
				v.errorf("metrics.listen", "want ip:port or \"off\": %v", err)
			}
		}
	}
	v.control(f, c)
	v.syn(f, c)
	v.backend(f, c)
	v.flows(f, c)
	v.filters(f, c)
	v.services(f, c)
	v.bgp(f, c)
	for i, ps := range f.Peers {
		a, err := netip.ParseAddr(ps)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			v.errorf(fmt.Sprintf("peers.%d", i), "%q: want a unicast address without zone", ps)
			continue
		}
		c.Peers = append(c.Peers, a.Unmap())
	}
	return c
}

func (v *validator) control(f *file, c *Config) {
	c.Control.Socket = or(f.Control.Socket, DefaultControlSocket)
	if c.Control.Socket != "off" && !strings.HasPrefix(c.Control.Socket, "/") {
		v.errorf("control.socket", "%q: want an absolute path or \"off\"", c.Control.Socket)
	}
	switch f.Control.Mode {
	case "", "0600", "600":
		c.Control.Mode = 0o600
	case "0660", "660":
		c.Control.Mode = 0o660
	default:
		v.errorf("control.mode", "%q: want \"0600\" or \"0660\"", f.Control.Mode)
	}
}

func (v *validator) interfaces(f *file, c *Config) {
	if len(f.Interfaces) == 0 {
		v.errorf("interfaces", "at least one interface is required")
	}
	seen := map[string]bool{}
	for i, in := range f.Interfaces {
		p := fmt.Sprintf("interfaces.%d", i)
		if in.Name == "" || len(in.Name) > 15 || strings.ContainsAny(in.Name, "/ \t") {
			v.errorf(p+".name", "%q is not a valid interface name", in.Name)
		}
		if seen[in.Name] {
			v.errorf(p+".name", "interface %q listed twice", in.Name)
		}
		seen[in.Name] = true
		mode := XDPMode(or(in.XDPMode, string(XDPAuto)))
		switch mode {
		case XDPNative, XDPGeneric, XDPAuto:
		default:
			v.errorf(p+".xdp_mode", "%q: want native, generic or auto", in.XDPMode)
		}
		dp := Datapath(or(in.Datapath, string(DatapathAuto)))
		switch dp {
		case DatapathXDP, DatapathTC, DatapathAuto:
		default:
			v.errorf(p+".datapath", "%q: want xdp, tc or auto", in.Datapath)
		}
		for j, cpu := range in.CPUs {
			if cpu < 0 || cpu > 4095 {
				v.errorf(fmt.Sprintf("%s.cpus.%d", p, j), "%d out of range 0-4095", cpu)
			}
		}
		c.Interfaces = append(c.Interfaces, Interface{Name: in.Name, Mode: mode, Datapath: dp, CPUs: in.CPUs})
	}
}

// secret checks what can be checked without creating anything: an existing
// secret must be a readable regular file that only its owner can read.
func (v *validator) secret(path string) {
	st, err := os.Stat(path)
	if os.IsNotExist(err) {
		return // created at run time
	}
	if err != nil {
		v.errorf("secret_file", "%v", err)
		return
	}
	if !st.Mode().IsRegular() {
		v.errorf("secret_file", "%s is not a regular file", path)
		return
	}
	if st.Mode().Perm()&0o077 != 0 {
		v.errorf("secret_file", "%s is readable by group or others (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	fh, err := os.Open(path)
	if err != nil {
		v.errorf("secret_file", "unreadable: %v", err)
		return
	}
	fh.Close()
}

func (v *validator) syn(f *file, c *Config) {
	c.SYN.Cookies = v.cookiePolicy("syn.cookies", f.SYN.Cookies, spec.CookiesAuto)
	c.SYN.MaxSynBacklog = v.intRange("syn.max_syn_backlog", f.SYN.MaxSynBacklog, spec.DefaultMaxSynBacklog, 1, hardMaxEntries)
	c.SYN.SynAckRetries = v.intRange("syn.synack_retries", f.SYN.SynAckRetries, spec.DefaultSynAckRetries, 0, spec.MaxSynAckRetries)
	c.SYN.Somaxconn = v.intRange("syn.somaxconn", f.SYN.Somaxconn, spec.DefaultSomaxconn, 1, hardMaxEntries)
	c.SYN.KeyRotation = v.duration("syn.key_rotation", f.SYN.KeyRotation, DefaultKeyRotation, time.Second, 24*time.Hour)
	c.SYN.PeerCookieChecks = v.intRange("syn.peer_cookie_checks", f.SYN.PeerCookies, spec.DefaultPeerCookieChecks, 0, 1<<20)
}

func (v *validator) backend(f *file, c *Config) {
	b := &c.Backend
	b.ConnectTimeout = v.duration("backend.connect_timeout", f.Backend.ConnectTimeout, spec.DefaultConnectTimeout, 10*time.Millisecond, 5*time.Minute)
	b.ProbeInterval = v.duration("backend.probe_interval", f.Backend.ProbeInterval, 60*time.Second, time.Second, 7*24*time.Hour)
	b.PortQuietTime = v.duration("backend.port_quiet_time", f.Backend.PortQuietTime, 0, 0, time.Hour)
	b.MaxPending = v.intRange("backend.max_pending", f.Backend.MaxPending, spec.DefaultMaxPending, 0, 16<<20)
	b.PortMin, b.PortMax = spec.DefaultPortMin, spec.DefaultPortMax
	if f.Backend.Ports != "" {
		lo, hi, ok := parsePortRange(f.Backend.Ports)
		if !ok {
			v.errorf("backend.ports", "%q: want a range like 16384-32767 within 1-65535", f.Backend.Ports)
		} else {
			b.PortMin, b.PortMax = lo, hi
		}
	}
}

func parsePortRange(s string) (lo, hi uint16, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if err1 != nil || err2 != nil || l == 0 || l > h {
		return 0, 0, false
	}
	return uint16(l), uint16(h), true
}

func (v *validator) flows(f *file, c *Config) {
	c.Flows.Max = v.intRange("flows.max", f.Flows.Max, spec.DefaultFlowsMax, 16, hardMaxEntries)
	c.Flows.EstablishedTimeout = v.duration("flows.established_timeout", f.Flows.EstablishedTimeout, spec.DefaultEstablishedTimeout, time.Second, 30*24*time.Hour)
	c.Flows.CloseTimeout = v.duration("flows.close_timeout", f.Flows.CloseTimeout, spec.DefaultCloseTimeout, time.Second, time.Hour)
	c.Flows.ResetTimeout = v.duration("flows.reset_timeout", f.Flows.ResetTimeout, spec.DefaultResetTimeout, time.Second, time.Hour)
}

func (v *validator) filters(f *file, c *Config) {
	c.Filters.DropSynPayload = orBool(f.Filters.DropSynPayload, true)
	c.Filters.DropBadFlags = orBool(f.Filters.DropBadFlags, true)
	if f.Filters.RateLimit != nil {
		c.Filters.RateLimit = *f.Filters.RateLimit
	}
	c.Filters.RateBurst = 2 * c.Filters.RateLimit
	if f.Filters.RateBurst != nil {
		c.Filters.RateBurst = *f.Filters.RateBurst
		if c.Filters.RateLimit > 0 && c.Filters.RateBurst == 0 {
			v.errorf("filters.rate_burst", "must be at least 1 when rate_limit is set")
		}
	}
	c.Filters.PrefixLenV4 = v.intRange("filters.prefix_len_v4", f.Filters.PrefixLenV4, 24, 1, 32)
	c.Filters.PrefixLenV6 = v.intRange("filters.prefix_len_v6", f.Filters.PrefixLenV6, 64, 1, 128)
}

func (v *validator) services(f *file, c *Config) {
	if len(f.Services) == 0 {
		v.errorf("services", "at least one service is required")
	}
	names := map[string]int{}
	listens := map[netip.AddrPort]int{}
	allSources := map[netip.Addr]bool{}
	for i, sf := range f.Services {
		p := fmt.Sprintf("services.%d", i)
		s := spec.Service{Name: sf.Name}
		if !namePattern.MatchString(sf.Name) {
			v.errorf(p+".name", "%q: want 1-64 letters, digits, '_', '.', '-'", sf.Name)
		} else if j, dup := names[sf.Name]; dup {
			v.errorf(p+".name", "%q already names services[%d]", sf.Name, j)
		}
		names[sf.Name] = i
		s.Listen = v.addrPort(p+".listen", sf.Listen)
		if s.Listen.IsValid() {
			if j, dup := listens[s.Listen]; dup {
				v.errorf(p+".listen", "%s is already the listener of services[%d]", s.Listen, j)
			}
			listens[s.Listen] = i
		}
		s.Backends = v.backends(p, sf, s.Listen)
		var first netip.AddrPort
		if len(s.Backends) > 0 {
			first = s.Backends[0].Addr
		}
		s.Sources = v.sources(p+".source", sf.Source, first)
		v.balancing(p, sf, &s)
		for _, a := range s.Sources {
			allSources[a] = true
		}
		s.Limits = spec.Limits{
			Backlog:   v.intRange(p+".backlog", sf.Backlog, spec.DefaultBacklog, 1, hardMaxEntries),
			Somaxconn: c.SYN.Somaxconn, MaxSynBacklog: c.SYN.MaxSynBacklog,
			SynAckRetries: c.SYN.SynAckRetries, PeerCookieChecks: c.SYN.PeerCookieChecks,
		}
		if s.OnOverflow = spec.OverflowPolicy(or(sf.OnOverflow, string(spec.OverflowDrop))); !s.OnOverflow.Valid() {
			v.errorf(p+".on_overflow", "%q: want drop or reset", sf.OnOverflow)
		}
		s.Cookies = v.cookiePolicy(p+".cookies", sf.Cookies, c.SYN.Cookies)
		s.RateLimitExempt = sf.RateLimitExempt
		v.announce(p+".announce", sf, &s)
		c.Services = append(c.Services, s)
	}
	if len(allSources) > MaxSources {
		v.errorf("services", "%d source addresses in all; at most %d", len(allSources), MaxSources)
	}
}

// backendFile is one entry of "backends": an address, or a mapping with
// an address and a weight.
type backendFile struct {
	Address string `yaml:"address"`
	Weight  *int   `yaml:"weight"`
}

// UnmarshalYAML accepts "ip:port" or {address: ip:port, weight: N}.
func (b *backendFile) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		b.Address = n.Value
		return nil
	}
	type plain backendFile
	return n.Decode((*plain)(b))
}

type healthCheckFile struct {
	Type     string         `yaml:"type"`
	Interval *time.Duration `yaml:"interval"`
	Timeout  *time.Duration `yaml:"timeout"`
	Rise     *int           `yaml:"rise"`
	Fall     *int           `yaml:"fall"`
	Path     string         `yaml:"path"`
	Host     string         `yaml:"host"`
	Status   *int           `yaml:"status"`
}

// Health check defaults (HAProxy's rise and fall; an interval that finds
// a dead backend within fall x interval = 15 s while costing a backend one
// connection per 5 s per gateway).
const (
	DefaultCheckInterval = 5 * time.Second
	DefaultCheckTimeout  = 2 * time.Second
	DefaultCheckRise     = 2
	DefaultCheckFall     = 3
)

// backends reads "backend" (a pool of one) or "backends".
func (v *validator) backends(p string, sf serviceFile, listen netip.AddrPort) []spec.Backend {
	var out []spec.Backend
	switch {
	case sf.Backend != "" && len(sf.Backends) > 0:
		v.errorf(p+".backends", "set backend or backends, not both")
		return nil
	case sf.Backend != "":
		a := v.addrPort(p+".backend", sf.Backend)
		if !a.IsValid() {
			return nil
		}
		out = []spec.Backend{{Addr: a, Weight: 1}}
	case len(sf.Backends) == 0:
		v.errorf(p+".backend", "required: backend, or a list of backends")
		return nil
	}
	seen := map[netip.AddrPort]bool{}
	for i, bf := range sf.Backends {
		bp := fmt.Sprintf("%s.backends.%d", p, i)
		a := v.addrPort(bp, bf.Address)
		if !a.IsValid() {
			continue
		}
		if seen[a] {
			v.errorf(bp, "%s listed twice", a)
			continue
		}
		seen[a] = true
		out = append(out, spec.Backend{Addr: a, Weight: v.intRange(bp+".weight", bf.Weight, 1, 0, spec.MaxWeight)})
	}
	if len(out) > spec.MaxBackends {
		v.errorf(p+".backends", "%d backends; at most %d", len(out), spec.MaxBackends)
	}
	for _, b := range out {
		if listen.IsValid() && listen.Addr().Is4() != b.Addr.Addr().Is4() {
			v.errorf(p+".backend", "%s and listener %s are of different address families", b.Addr, listen)
		}
	}
	return out
}

// balancing reads the pool's hashing, PROXY protocol, no-backend policy
// and health checks.
func (v *validator) balancing(p string, sf serviceFile, s *spec.Service) {
	s.Hash = spec.HashKey(or(sf.Hash, string(spec.HashTuple)))
	if s.Hash != spec.HashTuple && s.Hash != spec.HashAddress {
		v.errorf(p+".hash", "%q: want tuple or address", sf.Hash)
	}
	s.ProxyProtocol = spec.ProxyProtocol(or(sf.ProxyProtocol, string(spec.ProxyOff)))
	switch s.ProxyProtocol {
	case spec.ProxyOff, spec.ProxyV1, spec.ProxyV2:
	default:
		v.errorf(p+".proxy_protocol", "%q: want off, v1 or v2", sf.ProxyProtocol)
	}
	s.OnNoBackend = spec.NoBackendPolicy(or(sf.OnNoBackend, string(spec.NoBackendReset)))
	if s.OnNoBackend != spec.NoBackendReset && s.OnNoBackend != spec.NoBackendDrop {
		v.errorf(p+".on_no_backend", "%q: want reset or drop", sf.OnNoBackend)
	}
	hf, hp := sf.HealthCheck, p+".health_check"
	h := spec.HealthCheck{
		Type:     spec.HealthCheckType(or(hf.Type, string(spec.CheckTCP))),
		Interval: v.duration(hp+".interval", hf.Interval, DefaultCheckInterval, 100*time.Millisecond, time.Hour),
		Rise:     v.intRange(hp+".rise", hf.Rise, DefaultCheckRise, 1, 100),
		Fall:     v.intRange(hp+".fall", hf.Fall, DefaultCheckFall, 1, 100),
		Path:     or(hf.Path, "/"),
		Host:     hf.Host,
		Status:   v.intRange(hp+".status", hf.Status, 200, 100, 599),
	}
	h.Timeout = v.duration(hp+".timeout", hf.Timeout, min(DefaultCheckTimeout, h.Interval), 10*time.Millisecond, time.Hour)
	switch h.Type {
	case spec.CheckTCP, spec.CheckHTTP, spec.CheckOff:
	default:
		v.errorf(hp+".type", "%q: want tcp, http or off", hf.Type)
	}
	if !strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, " \r\n") {
		v.errorf(hp+".path", "%q: want an absolute path without spaces", hf.Path)
	}
	if strings.ContainsAny(h.Host, " \r\n") {
		v.errorf(hp+".host", "%q: want a host name", hf.Host)
	}
	s.HealthCheck = h
}

// addrList is "source": one string, or a list of them.
type addrList []string

// UnmarshalYAML accepts a scalar or a sequence of scalars. Its errors are
// yaml.TypeErrors, so decoding goes on and the file's other problems are
// reported with them.
func (l *addrList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = addrList{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(addrList, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want an address or prefix", c.Line)}}
			}
			out = append(out, c.Value)
		}
		*l = out
		return nil
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want an address, a prefix or a list of them", n.Line)}}
}

// sources expands a service's source addresses and prefixes (every address
// of a prefix is used, so a prefix names addresses assigned to the gateway,
// not a subnet with a network address).
func (v *validator) sources(path string, l addrList, backend netip.AddrPort) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for i, s := range l {
		p := path
		if len(l) > 1 {
			p = fmt.Sprintf("%s.%d", path, i)
		}
		var addrs []netip.Addr
		if strings.Contains(s, "/") {
			pfx, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				v.errorf(p, "%v", err)
				continue
			}
			pfx = pfx.Masked()
			if host := pfx.Addr().BitLen() - pfx.Bits(); host > 8 {
				v.errorf(p, "%s holds %d addresses; at most %d", pfx, uint64(1)<<min(host, 63), MaxSources)
				continue
			}
			for a := pfx.Addr(); a.IsValid() && pfx.Contains(a); a = a.Next() {
				addrs = append(addrs, a)
			}
		} else {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				v.errorf(p, "%v", err)
				continue
			}
			addrs = []netip.Addr{a.Unmap()}
		}
		for _, a := range addrs {
			switch {
			case a.Zone() != "" || a.IsUnspecified() || a.IsMulticast():
				v.errorf(p, "%s: want a unicast address of the gateway without zone", a)
				return nil
			case backend.IsValid() && a.Is4() != backend.Addr().Is4():
				v.errorf(p, "%s and backend %s are of different address families", a, backend)
				return nil
			}
			add(a)
		}
	}
	if len(out) > MaxSources {
		v.errorf(path, "%d addresses; at most %d", len(out), MaxSources)
		return nil
	}
	return out
}

func (v *validator) announce(p string, sf serviceFile, s *spec.Service) {
	a := sf.Announce
	if a.MSS != nil && (*a.MSS < 536 || *a.MSS > 65495) {
		v.errorf(p+".mss", "%d out of range 536-65495", *a.MSS)
	}
	if a.WindowScale != nil && *a.WindowScale > 14 {
		v.errorf(p+".window_scale", "%d out of range 0-14 (RFC 7323)", *a.WindowScale)
	}
	s.Announce = spec.Announce{MSS: a.MSS, WindowScale: a.WindowScale, SACK: a.SACK, Timestamps: a.Timestamps}
}

func (v *validator) addrPort(path, s string) netip.AddrPort {
	if s == "" {
		v.errorf(path, "required (ip:port, or [ipv6]:port)")
		return netip.AddrPort{}
	}
	host, port, ok := cutPort(s)
	if !ok {
		v.errorf(path, "%q: want ip:port, or [ipv6]:port", s)
		return netip.AddrPort{}
	}
	n, err := strconv.ParseUint(port, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		v.errorf(path, "port %s out of range 1-65535", port)
		return netip.AddrPort{}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		v.errorf(path, "%q is not an IP address", host)
		return netip.AddrPort{}
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
		v.errorf(path, "%s: want a unicast address without zone", a)
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(n))
}

// cutPort splits "host:port" and "[v6]:port" without the DNS-flavoured
// leniency of net.SplitHostPort.
func cutPort(s string) (host, port string, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return "", "", false
		}
		return s[1:end], s[end+2:], true
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 || strings.Count(s, ":") > 1 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func (v *validator) cookiePolicy(path, s string, def spec.CookiePolicy) spec.CookiePolicy {
	if s == "" {
		return def
	}
	if p := spec.CookiePolicy(s); p.Valid() {
		return p
	}
	v.errorf(path, "%q: want never, auto or always", s)
	return def
}

func (v *validator) intRange(path string, p *int, def, lo, hi int) int {
	if p == nil {
		return def
	}
	if *p < lo || *p > hi {
		v.errorf(path, "%d out of range %d-%d", *p, lo, hi)
		return def
	}
	return *p
}

func (v *validator) duration(path string, p *time.Duration, def, lo, hi time.Duration) time.Duration {
	if p == nil {
		return def
	}
	if *p < lo || *p > hi {
		v.errorf(path, "%v out of range %v-%v", *p, lo, hi)
		return def
	}
	return *p
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orBool(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}
