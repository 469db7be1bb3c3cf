package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func runCLI(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	err := run(context.Background(), env{stdout: &out, stderr: &errb}, args)
	code = exitCode(err, &errb)
	return out.String(), errb.String(), code
}

func TestHelpIsStable(t *testing.T) {
	out, _, code := runCLI("--help")
	if code != 0 || out != usage {
		t.Errorf("--help: code %d, output:\n%s", code, out)
	}
	for _, cmd := range []string{"run", "check", "version"} {
		if !strings.Contains(usage, "syngate "+cmd) {
			t.Errorf("usage does not mention %s", cmd)
		}
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"check"}, 2, "-c FILE is required"},
		{[]string{"check", "-x"}, 2, "flag provided but not defined"},
		{[]string{"check", "-c", "../../config/example.yaml", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"check", "-c", "/nonexistent.yaml"}, 1, "no such file"},
		{[]string{"run"}, 2, "-c FILE is required"},
		{[]string{"run", "-c", "x", "-log-level", "loud"}, 2, "-log-level"},
		{[]string{"run", "-c", "x", "-log-format", "xml"}, 2, "-log-format"},
		{[]string{"check", "-h"}, 0, "Usage: syngate check"},
		{[]string{"status", "-socket", "/nonexistent/control.sock", "-interval", "0"}, 1, "is syngate running"},
		{[]string{"flows", "-socket", "/nonexistent/control.sock"}, 1, "is syngate running"},
		{[]string{"flows", "extra"}, 2, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		_, stderr, code := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: code %d stderr %q; want code %d containing %q", tt.args, code, stderr, tt.code, tt.want)
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, code := runCLI("version")
	// go test stamps no VCS information: the version is the main
	// module's, the revision unknown.
	want := fmt.Sprintf("syngate %s (revision %s, %s)\n", build.Version, build.Revision, runtime.Version())
	if code != 0 || out != want || build.Version == "" || build.Revision == "" {
		t.Errorf("version: %d %q, want %q", code, out, want)
	}
}

func TestCheckPrintsPlan(t *testing.T) {
	out, stderr, code := runCLI("check", "-c", "../../config/example.yaml")
	if code != 0 {
		t.Fatalf("check example.yaml: code %d: %s", code, stderr)
	}
	for _, want := range []string{
		"config OK",
		"attach XDP to eth0 (mode auto), splice with datapath auto",
		"service web: 192.0.2.10:80 -> 10.0.0.5:8080 (source 10.0.0.1)",
		"accept queue 1024 = min(backlog 1024, somaxconn 4096), on overflow drop",
		"announce: mss 1460, window scale 7, sack true, timestamps true",
		"service web6: [2001:db8::10]:443 -> [2001:db8:1::5]:8443 (source from the route)",
		"announce: mss learned from backend",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckReportsErrors(t *testing.T) {
	_, stderr, code := runCLI("check", "-c", "testdata/bad.yaml")
	if code != 1 || !strings.Contains(stderr, "line 6: services.0.backlog: 0 out of range") {
		t.Errorf("code %d stderr %q", code, stderr)
	}
}

func TestInterruptedExitCode(t *testing.T) {
	var errb bytes.Buffer
	if code := exitCode(context.Canceled, &errb); code != 130 || !strings.Contains(errb.String(), "interrupted") {
		t.Errorf("code %d, stderr %q", code, errb.String())
	}
}

func TestCheckHostFailsWhereRunWould(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip(err)
	}
	lo := strings.Fields(string(b))[0]
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	body := "interfaces: [{name: sgo-nosuch0}]\nsecret_file: " + filepath.Join(dir, "secret") + "\nbpffs: \"off\"\nbackend: {ports: " + lo + "-" + lo + "}\nservices:\n  - {name: a, listen: 192.0.2.1:80, backend: 10.0.0.5:80, source: 10.0.0.1}\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runCLI("check", "-c", cfg); code != 0 {
		t.Fatalf("plain check failed: %s", stderr)
	}
	out, stderr, code := runCLI("check", "-c", cfg, "-host")
	if code != 1 || !strings.Contains(stderr, "host checks failed") {
		t.Errorf("check -host: code %d stderr %q", code, stderr)
	}
	for _, want := range []string{"FAIL  backend.ports " + lo + "-" + lo, "overlaps net.ipv4.ip_local_port_range", "FAIL  interface sgo-nosuch0 present"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
