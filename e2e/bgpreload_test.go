package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBGPReload changes the bgp section of a running syngate with
// `syngate reload` while BIRD routes the VIP to it: a peer's timers change
// (its session is re-created, the route comes back), a wrong peer ASN
// takes the route away and the right one brings it back, and a change of
// the local ASN is refused, naming the key, with the route left as it was.
func TestBGPReload(t *testing.T) {
	l := newECMPLab(t, ecmpOptions{cookies: []string{"auto"}, restartTime: "120s", queues: 1})
	g := l.gws[0]
	orig, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(filepath.Dir(g.cfgPath), "control.sock")
	reload := func(what string, edit func(string) string) (string, error) {
		t.Helper()
		cfg := edit(string(orig))
		if cur, _ := os.ReadFile(g.cfgPath); cfg == string(cur) {
			t.Fatalf("%s: the edit changed nothing", what)
		}
		if err := os.WriteFile(g.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(syngateBin, "reload", "-socket", sock).CombinedOutput()
		return string(out), err
	}
	mustReload := func(what string, edit func(string) string) {
		t.Helper()
		out, err := reload(what, edit)
		if err != nil || !strings.Contains(out, "bgp.peers") {
			t.Fatalf("%s: reload %v: %s (want bgp.peers applied)", what, err, out)
		}
	}
	same := func(s string) string { return s }
	peerASN := "      asn: 65000\n"

	// Timers: the session is re-created with them.
	mustReload("timers", func(s string) string {
		return strings.Replace(s, "      hold_time: 3s\n", "      hold_time: 6s\n", 1)
	})
	l.waitNexthops(1, 20*time.Second)

	// A peer ASN the router does not have: it refuses the session.
	mustReload("wrong peer asn", func(s string) string {
		return strings.Replace(s, peerASN, "      asn: 65099\n", 1)
	})
	l.waitNexthops(0, 20*time.Second)

	// The router's ASN again: the route is back.
	mustReload("peer asn restored", same)
	l.waitNexthops(1, 20*time.Second)

	// The local ASN only a restart applies: refused, named, nothing changes.
	out, err := reload("local asn", func(s string) string {
		return strings.Replace(s, "  local_asn: 65010\n", "  local_asn: 65011\n", 1)
	})
	if err == nil || !strings.Contains(out, "bgp.local_asn") || !strings.Contains(out, "restart") {
		t.Fatalf("local asn change: %v: %s, want a refusal naming bgp.local_asn", err, out)
	}
	time.Sleep(2 * time.Second)
	if len(l.nexthops()) != 1 {
		t.Fatalf("a refused reload changed the route: next hops %v", l.nexthops())
	}
}
