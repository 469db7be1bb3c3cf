package config

import (
	"fmt"
	"net/netip"
	"time"
)

// BGP configures the embedded BGP speaker that announces each service's VIP
// (a /32 or /128) to the routers in front of the gateways, so that the
// network spreads connections over them with ECMP. The zero value (no peers)
// announces nothing.
type BGP struct {
	// LocalASN and RouterID identify the speaker; both are required with
	// peers.
	LocalASN uint32
	RouterID netip.Addr
	// ListenPort is where the speaker accepts sessions; 0 (the default)
	// accepts none and only connects out to the peers.
	ListenPort uint16
	// RestartTime is the graceful-restart time announced to peers: after a
	// daemon restart (the data path stays up) they keep its routes this
	// long. 0 turns graceful restart off. Default 120s.
	RestartTime time.Duration
	Peers       []BGPPeer
}

// BGPPeer is one router the speaker keeps a session with.
type BGPPeer struct {
	Address netip.Addr
	ASN     uint32
	Port    uint16 // default 179
	// Password turns on TCP MD5 signatures (RFC 2385); empty means none.
	Password string
	// HoldTime and Keepalive are the session timers; defaults 90s and
	// HoldTime/3. A gateway that dies without closing its sessions keeps
	// receiving new connections until the peer's hold timer fires.
	HoldTime, Keepalive time.Duration
	// ConnectRetry is how often a down session is retried. Default 5s.
	ConnectRetry time.Duration
}

// Defaults of the bgp section.
const (
	DefaultBGPPort         = 179
	DefaultBGPHoldTime     = 90 * time.Second
	DefaultBGPRestartTime  = 120 * time.Second
	DefaultBGPConnectRetry = 5 * time.Second
)

type bgpFile struct {
	LocalASN    *uint32        `yaml:"local_asn"`
	RouterID    string         `yaml:"router_id"`
	ListenPort  *uint16        `yaml:"listen_port"`
	RestartTime *time.Duration `yaml:"restart_time"`
	Peers       []struct {
		Address      string         `yaml:"address"`
		ASN          *uint32        `yaml:"asn"`
		Port         *uint16        `yaml:"port"`
		Password     string         `yaml:"password"`
		HoldTime     *time.Duration `yaml:"hold_time"`
		Keepalive    *time.Duration `yaml:"keepalive"`
		ConnectRetry *time.Duration `yaml:"connect_retry"`
	} `yaml:"peers"`
}

func (v *validator) bgp(f *file, c *Config) {
	b := &c.BGP
	fb := &f.BGP
	b.RestartTime = v.duration("bgp.restart_time", fb.RestartTime, DefaultBGPRestartTime, 0, 4095*time.Second)
	if fb.ListenPort != nil {
		b.ListenPort = *fb.ListenPort
	}
	if len(fb.Peers) == 0 {
		return
	}
	if fb.LocalASN == nil || *fb.LocalASN == 0 {
		v.errorf("bgp.local_asn", "required with peers (1-4294967295)")
	} else {
		b.LocalASN = *fb.LocalASN
	}
	if a, err := netip.ParseAddr(fb.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
		v.errorf("bgp.router_id", "%q: want a non-zero IPv4 address (the BGP identifier)", fb.RouterID)
	} else {
		b.RouterID = a
	}
	seen := map[netip.Addr]int{}
	for i, pf := range fb.Peers {
		p := fmt.Sprintf("bgp.peers.%d", i)
		peer := BGPPeer{Port: DefaultBGPPort, Password: pf.Password}
		a, err := netip.ParseAddr(pf.Address)
		switch {
		case err != nil:
			v.errorf(p+".address", "%q is not an IP address", pf.Address)
		case a.Zone() != "" || a.IsUnspecified() || a.IsMulticast():
			v.errorf(p+".address", "%s: want a unicast address without zone", a)
		default:
			peer.Address = a.Unmap()
			if j, dup := seen[peer.Address]; dup {
				v.errorf(p+".address", "%s is already bgp.peers[%d]", a, j)
			}
			seen[peer.Address] = i
		}
		if pf.ASN == nil || *pf.ASN == 0 {
			v.errorf(p+".asn", "required (1-4294967295)")
		} else {
			peer.ASN = *pf.ASN
		}
		if pf.Port != nil {
			if *pf.Port == 0 {
				v.errorf(p+".port", "0 is not a port")
			}
			peer.Port = *pf.Port
		}
		if len(pf.Password) > 80 {
			v.errorf(p+".password", "longer than the 80 bytes TCP MD5 keys allow")
		}
		// RFC 4271: a hold time is 0 or at least 3 s; 0 (no keepalives)
		// would never notice a dead gateway, so it is refused.
		peer.HoldTime = v.duration(p+".hold_time", pf.HoldTime, DefaultBGPHoldTime, 3*time.Second, 65535*time.Second)
		peer.Keepalive = v.duration(p+".keepalive", pf.Keepalive, peer.HoldTime/3, time.Second, peer.HoldTime)
		if pf.Keepalive != nil && peer.Keepalive*3 > peer.HoldTime {
			v.errorf(p+".keepalive", "%v is more than a third of hold_time %v", peer.Keepalive, peer.HoldTime)
		}
		peer.ConnectRetry = v.duration(p+".connect_retry", pf.ConnectRetry, DefaultBGPConnectRetry, time.Second, time.Hour)
		b.Peers = append(b.Peers, peer)
	}
}
