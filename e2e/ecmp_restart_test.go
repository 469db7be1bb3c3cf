package e2e

import (
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// birdProto is one BIRD protocol's state and info columns ("up",
// "Established"), from `birdc show protocols NAME`.
func (l *ecmpLab) birdProto(name string) (state, info string) {
	for _, line := range strings.Split(l.birdc("show", "protocols", name), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == name {
			state = f[3]
			if len(f) >= 6 {
				info = strings.Join(f[5:], " ")
			}
			return state, info
		}
	}
	return "", ""
}

// grLines keeps the lines about the session and graceful restart of
// `birdc show protocols all`.
func grLines(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if l := strings.ToLower(line); strings.Contains(l, "restart") || strings.Contains(l, "bgp state") || strings.Contains(l, "routes:") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestECMPRestartKeepsRoute restarts a gateway whose data path stays
// pinned, behind a real router: SIGTERM (what systemd's restart sends)
// makes syngate exit without withdrawing, its BGP session dies with the
// process, and BIRD, which saw the graceful-restart capability, keeps the
// route as stale; the pinned XDP program keeps splicing the gateway's
// transfers and answers new SYNs with cookies while no syngate runs. A new
// syngate on the same gateway opens the session again and announces the VIP
// before the End-of-RIB: the route never leaves the router's kernel table,
// no transfer breaks, and every new connection completes.
func TestECMPRestartKeepsRoute(t *testing.T) {
	l := newECMPLab(t, ecmpOptions{cookies: []string{"auto", "auto"}, restartTime: "120s", pinned: true})
	g1 := l.gws[0]

	// Transfers until gateway 1 carries at least two; they last well past
	// the restart.
	var trs []*transfer
	spliced := g1.metrics(t)[mSpliced]
	for len(trs) < 30 {
		tr, err := l.startTransfer(8 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		trs = append(trs, tr)
		if len(trs) >= 4 && g1.metrics(t)[mSpliced]-spliced >= 2 {
			break
		}
	}
	time.Sleep(200 * time.Millisecond)
	onRestarted := g1.metrics(t)[mSpliced] - spliced

	// New connections all along: one every 50 ms, each with 10 s to
	// complete (a SYN or ACK retransmission is allowed).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var tried, failed int
	var lastErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		var cw sync.WaitGroup
		defer cw.Wait()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			cw.Add(1)
			go func() {
				defer cw.Done()
				err := l.echoOnce(10 * time.Second)
				mu.Lock()
				defer mu.Unlock()
				tried++
				if err != nil {
					failed++
					lastErr = err
				}
			}()
		}
	}()

	// Watch the router's kernel table every 10 ms, from before the signal
	// to the end: the route must go through gateway 1 in every sample.
	sig := time.Now()
	var samples, lost int
	var firstLost time.Duration
	var routeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			via, err := l.routeVia(l.e.VIP4)
			mu.Lock()
			samples++
			if err != nil {
				routeErr = err
			} else if !slices.Contains(via, g1.addr) {
				if lost == 0 {
					firstLost = time.Since(sig)
				}
				lost++
			}
			mu.Unlock()
		}
	}()

	// And BIRD's session to gateway 1, while waiting for each step.
	var sessionDown, sessionUp time.Time
	watch := func(until func() bool, limit time.Duration) {
		t.Helper()
		start := time.Now()
		for !until() {
			if time.Since(start) > limit {
				t.Fatalf("waited %v; session %v", limit, l.birdc("show", "protocols", "gw1"))
			}
			state, info := l.birdProto("gw1")
			up := state == "up" && info == "Established"
			switch {
			case !up && sessionDown.IsZero():
				sessionDown = time.Now()
			case up && !sessionDown.IsZero() && sessionUp.IsZero():
				sessionUp = time.Now()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	sig = time.Now()
	g1.d.Signal(syscall.SIGTERM)
	watch(g1.d.Exited, 15*time.Second)
	exited := time.Now()
	// The restart: syngate is gone for a second (a binary upgrade, a
	// systemd restart's delay), then a new one starts.
	var stale string
	watch(func() bool {
		if stale == "" && !sessionDown.IsZero() {
			stale = l.birdc("show", "route", "all", l.e.VIP4.String()+"/32") + grLines(l.birdc("show", "protocols", "all", "gw1"))
		}
		return time.Since(exited) > time.Second
	}, 5*time.Second)
	started := time.Now()
	l.start(g1)
	ready := time.Now()
	watch(func() bool { return !sessionUp.IsZero() && g1.established(t) }, 30*time.Second)
	// The new syngate told the router that its data path kept forwarding
	// (RFC 4724's Restart State and Forwarding State bits), so the router
	// keeps the stale route until the End-of-RIB that follows the route,
	// instead of flushing it as the session comes up (which lost the route
	// for a moment once in CI).
	restarted := l.birdc("show", "protocols", "all", "gw1")
	if _, caps, _ := strings.Cut(restarted, "Neighbor capabilities"); !strings.Contains(caps, "Restart recovery") || !strings.Contains(caps, "AF preserved: ipv4") {
		t.Errorf("the restarted gateway did not open as a restarting speaker with forwarding preserved:\n%s", restarted)
	}
	// A few seconds of serving after the restart, then the transfers end.
	watch(func() bool { return time.Since(sessionUp) > 2*time.Second }, 10*time.Second)
	close(stop)
	wg.Wait()
	var broken int
	for i, tr := range trs {
		if err := <-tr.done; err != nil {
			broken++
			t.Logf("transfer %d: %v", i, err)
		}
	}
	t.Logf("router while gateway 1 was down:\n%s", stale)
	t.Logf("SIGTERM -> exit %v; BIRD session down %v after the signal; new syngate started %v after the exit, ready in %v; session up again %v after it went down (the route stale at the router all that time)",
		exited.Sub(sig).Round(time.Millisecond), sessionDown.Sub(sig).Round(time.Millisecond), started.Sub(exited).Round(time.Millisecond),
		ready.Sub(started).Round(time.Millisecond), sessionUp.Sub(sessionDown).Round(time.Millisecond))
	t.Logf("gateway 1 carried %v of %d transfers: %d broke; new connections: %d of %d failed (last error %v); the route through gateway 1 was missing from %d of %d samples of the router's table",
		onRestarted, len(trs), broken, failed, tried, lastErr, lost, samples)
	if routeErr != nil {
		t.Errorf("read the router's table: %v", routeErr)
	}
	if lost > 0 {
		t.Errorf("the router dropped gateway 1's route during its restart, first %v after the signal, in %d of %d samples", firstLost.Round(time.Millisecond), lost, samples)
	}
	if sessionDown.IsZero() || sessionUp.IsZero() {
		t.Errorf("BIRD's session to gateway 1 did not go down and up again (down %v, up %v)", sessionDown, sessionUp)
	}
	if !strings.Contains(stale, "198.51.100.66") || !strings.Contains(stale, "graceful restart active") {
		t.Errorf("while gateway 1 was down, BIRD's route does not go through it, or its graceful restart is not on:\n%s", stale)
	}
	if broken > 0 {
		t.Errorf("%d transfers broke", broken)
	}
	if failed > 0 {
		t.Errorf("%d of %d new connections failed: %v", failed, tried, lastErr)
	}
	if !l.hasNexthop(g1.addr) {
		t.Error("gateway 1's route gone after its restart")
	}
}
