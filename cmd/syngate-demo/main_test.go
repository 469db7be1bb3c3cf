package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the README's first command, with short phases: it builds
// syngate from this tree, runs it in a lab under a flood, prints the live
// lines and the summary, keeps the last scrape and removes the lab.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the demo needs root (network namespaces, XDP)")
	}
	metricsFile := filepath.Join(t.TempDir(), "metrics.txt")
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, &out, &errb, []string{"-duration", "2s", "-calm", "1s", "-flood-rate", "50000", "-metrics-file", metricsFile})
	if err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errb.String())
	}
	for _, want := range []string{"building syngate", "before flood", "under flood", "after flood", "SYN-ACKs with cookies", "lab removed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	m, err := os.ReadFile(metricsFile)
	if err != nil || !strings.Contains(string(m), "syngate_build_info{") {
		t.Errorf("last scrape: %v\n%.500s", err, m)
	}
}

func TestFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), &out, &errb, []string{"-nope"}); err != errUsage {
		t.Errorf("bad flag: %v", err)
	}
	if err := run(context.Background(), &out, &errb, []string{"extra"}); err != errUsage || !strings.Contains(errb.String(), `unexpected argument "extra"`) {
		t.Errorf("extra argument: %v %q", err, errb.String())
	}
}
