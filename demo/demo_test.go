package demo

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/syngate/syngate/config"
)

// TestEmbeddedConfig checks that the embedded config, filled in for a lab,
// is a valid syngate config describing that lab.
func TestEmbeddedConfig(t *testing.T) {
	var b bytes.Buffer
	err := configTmpl.Execute(&b, map[string]any{
		"Interfaces": []string{"to-client", "to-backend"}, "SecretFile": "/nonexistent/demo/secret", "Metrics": metricsAddr,
		"Listen": netip.MustParseAddrPort("203.0.113.1:80"), "Backend": netip.MustParseAddrPort("198.51.100.2:8080"),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if len(cfg.Interfaces) != 2 || cfg.Interfaces[1].Name != "to-backend" || cfg.Services[0].Listen.Port() != 80 {
		t.Errorf("config = %+v", cfg)
	}
	if cfg.BPFFS != "off" || cfg.Metrics.Listen != metricsAddr.String() {
		t.Errorf("the demo must not pin maps and must serve metrics on %v: %+v", metricsAddr, cfg)
	}
}

func TestDefaultsAreBounded(t *testing.T) {
	o := Options{Flood: 24 * 60 * 60 * 1e9}
	o.defaults()
	if o.Flood != MaxFlood || o.Calm <= 0 || o.Clients <= 0 || o.Out == nil {
		t.Errorf("defaults = %+v", o)
	}
}
