package bgp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syngate/syngate/lab"
)

// The speaker runs in the test binary, re-executed inside a lab namespace
// (a GoBGP server's goroutines run on any thread, so it cannot live in a
// namespace that only one thread entered). The parent runs BIRD 2 in the
// router namespace and checks what BIRD learns at each step.
const childEnv = "SYNGATE_BGP_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := child(os.Stdin, os.Stdout); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// md5Password signs the session with TCP MD5 (RFC 2385) on both sides.
const md5Password = "syngate-test"

var (
	vipA = netip.MustParsePrefix("203.0.113.1/32")
	vipB = netip.MustParsePrefix("203.0.113.2/32")
)

// child is the speaker's side: each step prints a line and waits for the
// parent's "next".
func child(in io.Reader, out io.Writer) error {
	r := bufio.NewScanner(in)
	step := func(msg string) error {
		fmt.Fprintln(out, msg)
		if !r.Scan() {
			return errors.New("parent went away")
		}
		return nil
	}
	local := lab.ECMPGatewayV4(1).Addr()
	peer := Peer{Address: lab.ECMPRouterGwV4.Addr(), ASN: 65000, Password: md5Password, HoldTime: 3 * time.Second, Keepalive: time.Second, ConnectRetry: time.Second}
	cfg := Config{LocalASN: 65010, RouterID: local, Peers: []Peer{peer}}
	sp, err := Start(context.Background(), cfg, false, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	if err := sp.Announce([]netip.Prefix{vipA, vipB}); err != nil {
		return err
	}
	if err := sp.Announce([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}); err == nil {
		return errors.New("a /24 was accepted as a VIP")
	}
	if err := sp.Announce([]netip.Prefix{vipA, vipB}); err != nil {
		return err
	}
	if err := step("announced a b"); err != nil {
		return err
	}
	if err := sp.Announce([]netip.Prefix{vipA}); err != nil {
		return err
	}
	if err := step("withdrew b"); err != nil {
		return err
	}
	// A global change is refused and changes nothing.
	bad := cfg
	bad.LocalASN = 65011
	if err := sp.Update(bad); !errors.Is(err, ErrRestartNeeded) {
		return fmt.Errorf("Update with another ASN: %v, want ErrRestartNeeded", err)
	}
	// A changed peer is re-created; the announced set stays.
	peer.HoldTime, peer.Keepalive = 6*time.Second, 2*time.Second
	cfg.Peers = []Peer{peer}
	if err := sp.Update(cfg); err != nil {
		return err
	}
	if err := step("updated peer"); err != nil {
		return err
	}
	cfg.Peers = nil
	if err := sp.Update(cfg); err != nil {
		return err
	}
	if err := step("removed peer"); err != nil {
		return err
	}
	cfg.Peers = []Peer{peer}
	if err := sp.Update(cfg); err != nil {
		return err
	}
	if err := step("added peer"); err != nil {
		return err
	}
	// Another password: the router drops the session's segments (TCP
	// MD5), its hold timer ends the session and the route goes.
	wrong := peer
	wrong.Password = "not-the-routers"
	cfg.Peers = []Peer{wrong}
	if err := sp.Update(cfg); err != nil {
		return err
	}
	if err := step("changed password"); err != nil {
		return err
	}
	// The router's password again: the session and the route come back.
	cfg.Peers = []Peer{peer}
	if err := sp.Update(cfg); err != nil {
		return err
	}
	if err := waitEstablished(sp, 15*time.Second); err != nil {
		return err
	}
	if err := step("restored password"); err != nil {
		return err
	}
	if st := sp.Status(context.Background()); len(st.Peers) != 1 || !st.Peers[0].Established || len(st.Announced) != 1 || st.Announced[0] != vipA {
		return fmt.Errorf("status %+v", st)
	}
	if err := sp.Close(true); err != nil {
		return err
	}
	return step("closed")
}

// waitEstablished waits for every peer's session to be up.
func waitEstablished(sp *Speaker, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st := sp.Status(context.Background())
		up := len(st.Peers) > 0
		for _, p := range st.Peers {
			up = up && p.Established
		}
		if up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sessions not established after %v: %+v", timeout, st.Peers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSpeakerAgainstBIRD runs the speaker against BIRD 2 and changes what a
// reload can change while it runs: the announced set, a peer's timers
// (the peer is re-created), the peers (removed, added again), a peer's
// password (wrong: the session ends; right again: it comes back); a
// change of the local ASN is refused.
func TestSpeakerAgainstBIRD(t *testing.T) {
	lab.RequireRoot(t)
	for _, p := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("skipping: needs BIRD 2 (%s) as the BGP peer: apt-get install bird2", p)
		}
	}
	e, err := lab.NewECMP(t, lab.ECMPOptions{Gateways: 1, Prefix: "sgs-bgp-"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := fmt.Sprintf(`log "%s" all;
router id %s;
protocol device { scan time 1; }
protocol bgp gw1 {
	local as 65000;
	neighbor %s as 65010;
	passive on;
	password "%s";
	hold time 3;
	keepalive time 1;
	ipv4 { import all; export none; };
}
`, filepath.Join(dir, "bird.log"), lab.ECMPRouterV4.Addr(), lab.ECMPGatewayV4(1).Addr(), md5Password)
	if err := os.WriteFile(filepath.Join(dir, "bird.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "bird.ctl")
	bird, err := lab.StartDaemon(e.Router, filepath.Join(dir, "bird.out"), "bird", "-f", "-c", filepath.Join(dir, "bird.conf"), "-s", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bird.Stop(5 * time.Second) })
	if err := bird.WaitFile(sock, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	routes := func() string {
		out, err := e.Router.Command("birdc", "-s", sock, "show", "route").CombinedOutput()
		if err != nil {
			t.Fatalf("birdc: %v: %s", err, out)
		}
		return string(out)
	}
	waitRoutes := func(what string, want map[netip.Prefix]bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := routes()
			ok := true
			for p, in := range want {
				if strings.Contains(got, p.String()) != in {
					ok = false
				}
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(dir, "bird.log"))
				t.Fatalf("%s: router has\n%s\nwant %v\nbird log:\n%s", what, got, want, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := e.Gateways[0].Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("speaker log:\n%s", stderr.String())
		}
	})
	lines := bufio.NewScanner(stdout)
	expect := func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("speaker said %q, want %q", lines.Text(), want)
		}
	}
	next := func() { fmt.Fprintln(stdin, "next") }

	expect("announced a b")
	waitRoutes("announce", map[netip.Prefix]bool{vipA: true, vipB: true})
	next()
	expect("withdrew b")
	waitRoutes("withdraw", map[netip.Prefix]bool{vipA: true, vipB: false})
	next()
	expect("updated peer")
	waitRoutes("after the peer was re-created", map[netip.Prefix]bool{vipA: true, vipB: false})
	next()
	expect("removed peer")
	waitRoutes("after the peer was removed", map[netip.Prefix]bool{vipA: false})
	next()
	expect("added peer")
	waitRoutes("after the peer was added again", map[netip.Prefix]bool{vipA: true})
	next()
	expect("changed password")
	waitRoutes("after the password changed to one the router does not share", map[netip.Prefix]bool{vipA: false})
	next()
	expect("restored password")
	waitRoutes("after the router's password was restored", map[netip.Prefix]bool{vipA: true})
	next()
	expect("closed")
	waitRoutes("after Close(true)", map[netip.Prefix]bool{vipA: false})
	next()
}

// TestAnyPeerOf: an IPv6 VIP reaches only IPv6 peers, an IPv4 VIP only
// IPv4 ones (a mapped peer address was unmapped by the config).
func TestAnyPeerOf(t *testing.T) {
	v4 := Peer{Address: netip.MustParseAddr("198.51.100.65")}
	v6 := Peer{Address: netip.MustParseAddr("2001:db8:4::1")}
	a4, a6 := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8:3::1")
	for _, tc := range []struct {
		peers []Peer
		a     netip.Addr
		reach bool
	}{
		{nil, a4, false},
		{[]Peer{v4}, a4, true},
		{[]Peer{v4}, a6, false},
		{[]Peer{v6}, a4, false},
		{[]Peer{v6}, a6, true},
		{[]Peer{v4, v6}, a6, true},
	} {
		if got := anyPeerOf(tc.a, tc.peers); got != tc.reach {
			t.Errorf("anyPeerOf(%v, %v) = %v, want %v", tc.a, tc.peers, got, tc.reach)
		}
	}
}
