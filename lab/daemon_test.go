package lab

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDaemon(t *testing.T) {
	RequireRoot(t)
	ns, err := NewNS(t, "sg-dmn-")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	d, err := StartDaemon(ns, filepath.Join(dir, "log"), "sh", "-c", "echo starting; touch "+ready+"; exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitFile(ready, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Alive(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := d.Stop(5 * time.Second); err != nil || time.Since(start) > 2*time.Second {
		t.Errorf("Stop: %v after %v, want a prompt exit on SIGTERM", err, time.Since(start))
	}
	if !strings.Contains(d.Logs(), "starting") {
		t.Errorf("log = %q", d.Logs())
	}

	early, err := StartDaemon(ns, filepath.Join(dir, "log2"), "sh", "-c", "echo boom; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	err = early.WaitFile(filepath.Join(dir, "never"), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "boom") {
		t.Errorf("early exit: %v", err)
	}
}
