package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/syngate/syngate/config"
)

// TestCheckHostFindsWhatRunRefuses builds a config that config.Parse
// accepts but that run refuses on this host (a port range inside the
// kernel's ephemeral range, an interface that is not there, a pin
// directory off any bpffs) and checks that CheckHost names each problem.
func TestCheckHostFindsWhatRunRefuses(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip("no ip_local_port_range:", err)
	}
	f := strings.Fields(string(b))
	lo, _ := strconv.Atoi(f[0])
	dir := t.TempDir()
	// A directory with files, off any bpffs: run can neither pin there
	// nor mount a bpffs over it.
	if err := os.WriteFile(filepath.Join(dir, "other"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`interfaces: [{name: sgo-nosuch0}]
secret_file: %s
bpffs: %s
backend: {ports: %d-%d}
services:
  - name: web
    listen: 192.0.2.10:80
    backend: 10.0.0.5:8080
    source: 10.0.0.1
`, filepath.Join(dir, "secret"), filepath.Join(dir, "pins"), lo, lo+10)
	cfg, err := config.Parse(strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	failed := map[string]string{}
	for _, c := range CheckHost(cfg) {
		if c.Err != nil {
			failed[c.Name] = c.Err.Error()
		}
	}
	for name, want := range map[string]string{
		fmt.Sprintf("backend.ports %d-%d outside net.ipv4.ip_local_port_range", lo, lo+10): "overlaps net.ipv4.ip_local_port_range",
		"interface sgo-nosuch0 present":          "sgo-nosuch0",
		"bpffs at " + filepath.Join(dir, "pins"): "is not on a bpf filesystem and not empty",
	} {
		if !strings.Contains(failed[name], want) {
			t.Errorf("check %q: err %q, want it to contain %q (all failures: %v)", name, failed[name], want, failed)
		}
	}
	if msg, bad := failed["secret file "+filepath.Join(dir, "secret")]; bad {
		t.Errorf("secret in an existing directory refused: %s", msg)
	}
}
