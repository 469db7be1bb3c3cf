package control

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type fakeSource struct{ flows []Flow }

func (f fakeSource) Status() Status {
	return Status{Version: "t", PID: 7, Services: []Service{{Name: "web"}}}
}

func (f fakeSource) Flows(flt Filter, limit int, fn func(Flow)) (total int) {
	for _, fl := range f.flows {
		if !flt.Match(fl) {
			continue
		}
		total++
		if limit == 0 || total <= limit {
			fn(fl)
		}
	}
	return total
}

func TestServeAndClient(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	src := fakeSource{flows: []Flow{
		{Service: "web", Client: "10.1.0.2:4000", Backend: "10.2.0.2:8080"},
		{Service: "web", Client: "10.1.0.3:4001", Backend: "10.2.0.2:8080"},
		{Service: "web6", Client: "[2001:db8::2]:4000", Backend: "[2001:db8:2::2]:8080"},
	}}
	srv, err := Serve(Options{Path: path, Mode: 0o600}, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %v mode %v", err, fi.Mode())
	}
	c := NewClient(path)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st.PID != 7 || len(st.Services) != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
	for f, want := range map[Filter]int{
		{}:                           3,
		{Service: "web"}:             2,
		{Client: "10.1.0.3"}:         1,
		{Client: "10.1.0.3:4000"}:    0,
		{Client: "10.1.0.2:4000"}:    1,
		{Client: "2001:db8::2"}:      1,
		{Backend: "10.2.0.2"}:        2,
		{Backend: "[2001:db8:2::2]"}: 1,
	} {
		got, err := c.Flows(ctx, f, 0)
		if err != nil || len(got.Flows) != want || got.Total != want {
			t.Errorf("filter %+v: %+v (%v), want %d", f, got, err, want)
		}
	}
	if got, err := c.Flows(ctx, Filter{}, 2); err != nil || len(got.Flows) != 2 || got.Total != 3 {
		t.Errorf("limit 2: %+v %v", got, err)
	}
	// A second daemon must not take the socket of a live one.
	if _, err := Serve(Options{Path: path, Mode: 0o600}, src, nil); !errors.Is(err, ErrInUse) {
		t.Errorf("second Serve: %v, want ErrInUse", err)
	}
	if err := srv.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	if _, err := c.Status(ctx); err == nil {
		t.Error("status after Close succeeded")
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // a crashed daemon's leftover
	srv, err := Serve(Options{Path: path, Mode: 0o660}, fakeSource{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := NewClient(path).Status(ctx); err != nil {
		t.Error(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}

func TestFlowState(t *testing.T) {
	for _, tt := range []struct {
		spliced bool
		a, b    FlowDir
		want    string
	}{
		{false, FlowDir{}, FlowDir{}, "opening"},
		{true, FlowDir{}, FlowDir{}, "established"},
		{true, FlowDir{FIN: true}, FlowDir{}, "fin_wait"},
		{true, FlowDir{FIN: true}, FlowDir{FIN: true}, "closed"},
		{true, FlowDir{FIN: true}, FlowDir{RST: true}, "reset"},
	} {
		if got := FlowState(tt.spliced, tt.a, tt.b); got != tt.want {
			t.Errorf("%+v: %s, want %s", tt, got, tt.want)
		}
	}
}
