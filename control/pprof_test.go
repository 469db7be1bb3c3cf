package control

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

// TestPprof reads the daemon's command line and a one-second CPU profile
// over the control socket, as bench -profile does.
func TestPprof(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	srv, err := Serve(Options{Path: path, Mode: 0o600}, fakeSource{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	get := func(p string) []byte {
		t.Helper()
		resp, err := c.Get("http://syngate" + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %v", p, resp.Status, err)
		}
		return b
	}
	if b := get("/debug/pprof/cmdline"); !bytes.Contains(b, []byte("control.test")) {
		t.Errorf("cmdline %q", b)
	}
	// A gzipped protobuf profile.
	if b := get("/debug/pprof/profile?seconds=1"); len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("profile of %d bytes does not look gzipped", len(b))
	}
}
