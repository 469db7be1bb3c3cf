package control

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// TestReload: an applied reload comes back as its result, a refused one
// as an error carrying the daemon's reason; a daemon without the endpoint
// is an error too.
func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	srv, err := Serve(Options{Path: path, Mode: 0o600}, fakeSource{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := NewClient(path)
	if _, err := c.Reload(context.Background()); err == nil {
		t.Fatal("reload without an endpoint succeeded")
	}
	var refuse atomic.Bool
	srv.Handle("POST "+ReloadPath, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if refuse.Load() {
			ServeReload(w, ReloadResult{Error: "restart required: backend.ports cannot change"})
			return
		}
		ServeReload(w, ReloadResult{Added: []string{"api"}, Removed: []string{"gone"}, Unchanged: 2})
	}))
	res, err := c.Reload(context.Background())
	if err != nil || !slices.Equal(res.Added, []string{"api"}) || !slices.Equal(res.Removed, []string{"gone"}) || res.Unchanged != 2 {
		t.Fatalf("applied reload: %+v, %v", res, err)
	}
	refuse.Store(true)
	res, err = c.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "backend.ports") || res == nil || res.Error == "" {
		t.Fatalf("refused reload: %+v, %v", res, err)
	}
}
