// Package bgp is syngate's embedded BGP speaker: it keeps sessions with the
// routers in front of the gateways and announces the prefixes it is told to
// (each service's VIP as a /32 or /128), so the network spreads connections
// over every gateway that announces a VIP, with ECMP. It wraps GoBGP used as
// a library; nothing on the packet path imports it.
//
//	sp, err := bgp.Start(ctx, cfg, log)
//	sp.Announce([]netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")})
//	sp.Announce(nil)     // withdraw everything (drain)
//	sp.Close(true)       // withdraw, then close the sessions (shutdown)
//
// Graceful restart (RFC 4724) is announced to every peer: when the daemon
// exits without withdrawing (a restart, a crash) the peer keeps its routes
// for RestartTime, and the restarted speaker announces them again.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"
)

// maxDeferral caps how long a restarting speaker waits for its peers'
// End-of-RIB before it announces (RFC 4724's selection deferral): this
// gateway's routes do not depend on what the routers send.
const maxDeferral = 10 * time.Second

// Config is what the speaker runs with.
type Config struct {
	LocalASN uint32
	RouterID netip.Addr
	// ListenPort accepts sessions on this port; 0 accepts none (the speaker
	// only connects out).
	ListenPort uint16
	// RestartTime is the graceful-restart time announced; 0 disables
	// graceful restart.
	RestartTime time.Duration
	Peers       []Peer
}

// Peer is one router.
type Peer struct {
	Address      netip.Addr
	ASN          uint32
	Port         uint16 // 0 means 179
	Password     string // TCP MD5 (RFC 2385); empty for none
	HoldTime     time.Duration
	Keepalive    time.Duration
	ConnectRetry time.Duration
}

// PeerStatus is one session's state.
type PeerStatus struct {
	Address     netip.Addr
	State       string // idle, connect, active, opensent, openconfirm, established
	Established bool
}

// Status is what the speaker does now.
type Status struct {
	Peers     []PeerStatus
	Announced []netip.Prefix
}

// Speaker is a running BGP speaker. Its methods are safe for concurrent use.
type Speaker struct {
	log *slog.Logger
	srv *server.BgpServer

	mu        sync.Mutex
	cfg       Config
	announced map[netip.Prefix][]byte // prefix -> GoBGP path UUID
	closed    bool
}

// ErrRestartNeeded is returned by Update for a change a running speaker
// cannot take (local ASN, router ID, listen port, restart time).
var ErrRestartNeeded = errors.New("bgp: change needs a restart of the speaker")

// Start starts a speaker and its peer sessions. It announces nothing until
// Announce.
//
// forwarding says that the data path kept forwarding since an earlier
// speaker of this gateway stopped (a restart that left it attached). The
// first sessions then open as a restarting speaker's (RFC 4724: the
// Restart State bit, and the Forwarding State bit of each family): a
// router keeps this gateway's stale routes until its End-of-RIB, which
// follows the routes Announce gives, instead of flushing them when the
// session comes up and learning them again a moment later. Peers that an
// Update adds later open normally.
func Start(ctx context.Context, cfg Config, forwarding bool, log *slog.Logger) (*Speaker, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.LocalASN == 0 || !cfg.RouterID.Is4() {
		return nil, fmt.Errorf("bgp: local ASN and an IPv4 router ID are required")
	}
	srv := server.NewBgpServer(server.LoggerOption(&logger{log: log.With("component", "bgp")}))
	go srv.Serve()
	port := int32(-1) // GoBGP: do not listen
	if cfg.ListenPort != 0 {
		port = int32(cfg.ListenPort)
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.LocalASN, RouterId: cfg.RouterID.String(), ListenPort: port,
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	sp := &Speaker{log: log, srv: srv, cfg: Config{LocalASN: cfg.LocalASN, RouterID: cfg.RouterID, ListenPort: cfg.ListenPort, RestartTime: cfg.RestartTime}, announced: map[netip.Prefix][]byte{}}
	sp.mu.Lock()
	err := sp.updateLocked(cfg, forwarding && cfg.RestartTime > 0)
	sp.mu.Unlock()
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return sp, nil
}

// Update applies a new config atomically with respect to Announce: peers
// that are new are added, peers that are gone are removed, peers whose
// settings changed (ASN, port, password, timers) are re-created: their
// session restarts, and the router withdraws this speaker's routes until
// it is up again (a NOTIFICATION ends it; graceful restart does not keep
// them). Untouched peers keep their sessions. Changes to the global
// settings (GoBGP takes them once, at StartBgp) return ErrRestartNeeded
// and change nothing. A reload calls this.
func (sp *Speaker) Update(cfg Config) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.updateLocked(cfg, false)
}

// updateLocked is Update; restarting opens the sessions of the peers it
// adds as a restarting speaker's (see Start).
func (sp *Speaker) updateLocked(cfg Config, restarting bool) error {
	if sp.closed {
		return errors.New("bgp: speaker closed")
	}
	if cfg.LocalASN != sp.cfg.LocalASN || cfg.RouterID != sp.cfg.RouterID || cfg.ListenPort != sp.cfg.ListenPort || cfg.RestartTime != sp.cfg.RestartTime {
		return ErrRestartNeeded
	}
	ctx := context.Background()
	old := map[netip.Addr]Peer{}
	for _, p := range sp.cfg.Peers {
		old[p.Address] = p
	}
	var errs []error
	next := map[netip.Addr]bool{}
	for _, p := range cfg.Peers {
		next[p.Address] = true
		if o, ok := old[p.Address]; ok {
			if o == p {
				continue
			}
			if err := sp.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()}); err != nil {
				errs = append(errs, fmt.Errorf("bgp: replace peer %s: %w", p.Address, err))
				continue
			}
		}
		if err := sp.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p, cfg.RestartTime, restarting)}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: add peer %s: %w", p.Address, err))
		}
	}
	for a := range old {
		if !next[a] {
			if err := sp.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
				errs = append(errs, fmt.Errorf("bgp: remove peer %s: %w", a, err))
			}
		}
	}
	sp.cfg.Peers = slices.Clone(cfg.Peers)
	return errors.Join(errs...)
}

// apiPeer is p as GoBGP configures it: the peer's own address family only
// (an IPv6 VIP needs an IPv6 next hop, so it goes to IPv6 peers), graceful
// restart on both the session and the family.
func apiPeer(p Peer, restart time.Duration, restarting bool) *api.Peer {
	port := p.Port
	if port == 0 {
		port = 179
	}
	fam := familyOf(p.Address)
	afi := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}
	out := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: uint64(p.HoldTime.Seconds()), KeepaliveInterval: uint64(p.Keepalive.Seconds()),
			ConnectRetry: uint64(max(p.ConnectRetry, time.Second).Seconds()),
		}},
		Transport: &api.Transport{RemotePort: uint32(port)},
		AfiSafis:  []*api.AfiSafi{afi},
	}
	if restart > 0 {
		// A restarting speaker waits for its peers' End-of-RIB before it
		// sends its routes; the wait is capped well inside the restart
		// time, for which the routers keep the stale routes.
		deferral := min(max(restart/2, time.Second), maxDeferral)
		out.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(restart.Seconds()),
			LocalRestarting: restarting, DeferralTime: uint32(deferral.Seconds())}
		afi.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	return out
}

// anyPeerOf reports whether a route to a goes to any peer: a peer gets
// only the routes of its own address family (apiPeer).
func anyPeerOf(a netip.Addr, peers []Peer) bool {
	for _, p := range peers {
		if p.Address.Is4() == a.Is4() {
			return true
		}
	}
	return false
}

func familyOf(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

// Announce makes prefixes the announced set: new ones are announced,
// missing ones withdrawn. Every prefix must be a host route (/32 or /128).
func (sp *Speaker) Announce(prefixes []netip.Prefix) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return errors.New("bgp: speaker closed")
	}
	return sp.announceLocked(prefixes)
}

func (sp *Speaker) announceLocked(prefixes []netip.Prefix) error {
	ctx := context.Background()
	want := map[netip.Prefix]bool{}
	var errs []error
	for _, p := range prefixes {
		p = p.Masked()
		if p.Bits() != p.Addr().BitLen() {
			errs = append(errs, fmt.Errorf("bgp: %s is not a host route", p))
			continue
		}
		want[p] = true
		if _, ok := sp.announced[p]; ok {
			continue
		}
		path, err := hostPath(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r, err := sp.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", p, err))
			continue
		}
		sp.announced[p] = r.Uuid
		sp.log.Info("bgp: announce", "prefix", p)
		if !anyPeerOf(p.Addr(), sp.cfg.Peers) {
			sp.log.Warn("bgp: no peer of this prefix's address family, so no router learns it (an IPv6 VIP needs a peer with an IPv6 address)", "prefix", p)
		}
	}
	for p, id := range sp.announced {
		if want[p] {
			continue
		}
		if err := sp.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %s: %w", p, err))
			continue
		}
		delete(sp.announced, p)
		sp.log.Info("bgp: withdraw", "prefix", p)
	}
	return errors.Join(errs...)
}

// hostPath is a locally originated route to p whose next hop GoBGP sets to
// the session's local address (the unspecified next hop means "self").
func hostPath(p netip.Prefix) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	fam := familyOf(p.Addr())
	var nh *anypb.Any
	if p.Addr().Is4() {
		nh, err = anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
	} else {
		nh, err = anypb.New(&api.MpReachNLRIAttribute{Family: fam, NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}})
	}
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: fam, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}, nil
}

// Status reports the sessions and the announced prefixes.
func (sp *Speaker) Status(ctx context.Context) Status {
	sp.mu.Lock()
	var st Status
	for p := range sp.announced {
		st.Announced = append(st.Announced, p)
	}
	closed := sp.closed
	sp.mu.Unlock()
	slices.SortFunc(st.Announced, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if closed {
		return st
	}
	sp.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		a, _ := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		s := p.GetState().GetSessionState()
		st.Peers = append(st.Peers, PeerStatus{
			Address: a, State: stateName(s), Established: s == api.PeerState_ESTABLISHED,
		})
	})
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return st
}

func stateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// Close stops the speaker. With withdraw it first withdraws every prefix
// and gives the UPDATEs a moment to leave, then closes the sessions with a
// Cease: the routers drop the routes now (shutdown). Without withdraw it
// returns at once and leaves the sessions to die with the process, so the
// peers keep the routes for the graceful-restart time (restart).
func (sp *Speaker) Close(withdraw bool) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return nil
	}
	if !withdraw {
		return nil
	}
	sp.closed = true
	err := sp.announceLocked(nil)
	// The withdrawals go out through each peer's outgoing queue; StopBgp
	// tears the sessions down right after, so leave them time to be sent.
	time.Sleep(200 * time.Millisecond)
	err = errors.Join(err, sp.srv.StopBgp(context.Background(), &api.StopBgpRequest{}))
	sp.srv.Stop()
	return err
}

// logger sends GoBGP's logs to slog; GoBGP's info level is chatty, so it
// is debug here, except session state changes.
type logger struct {
	log   *slog.Logger
	level gobgplog.LogLevel
}

func (l *logger) attrs(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, k, v)
	}
	return out
}

func (l *logger) Panic(msg string, f gobgplog.Fields) { l.log.Error(msg, l.attrs(f)...) }
func (l *logger) Fatal(msg string, f gobgplog.Fields) { l.log.Error(msg, l.attrs(f)...) }
func (l *logger) Error(msg string, f gobgplog.Fields) { l.log.Error(msg, l.attrs(f)...) }
func (l *logger) Warn(msg string, f gobgplog.Fields)  { l.log.Warn(msg, l.attrs(f)...) }
func (l *logger) Info(msg string, f gobgplog.Fields) {
	if msg == "Peer Up" || msg == "Peer Down" {
		l.log.Info(msg, l.attrs(f)...)
		return
	}
	l.log.Debug(msg, l.attrs(f)...)
}
func (l *logger) Debug(msg string, f gobgplog.Fields) { l.log.Debug(msg, l.attrs(f)...) }
func (l *logger) SetLevel(level gobgplog.LogLevel)    { l.level = level }
func (l *logger) GetLevel() gobgplog.LogLevel         { return gobgplog.DebugLevel }
