package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDaemonHoldsTheDaemon: the binary operators deploy links neither the
// test framework nor the lab, the flood generator, the load generator or
// the demo (those live in cmd/syngate-demo).
func TestDaemonHoldsTheDaemon(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 || !contains(deps, "github.com/syngate/syngate/gateway") {
		t.Fatalf("go list -deps gave %d packages, without the gateway: %v", len(deps), deps)
	}
	for _, bad := range []string{
		"testing",
		"github.com/syngate/syngate/lab",
		"github.com/syngate/syngate/flood",
		"github.com/syngate/syngate/loadgen",
		"github.com/syngate/syngate/demo",
	} {
		if contains(deps, bad) {
			t.Errorf("cmd/syngate depends on %s", bad)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestVersionStampedByGoBuild builds syngate from a fresh git repository
// holding this source, as a user's checkout would, and checks that
// `syngate version` reports the commit the go command stamped, the
// linker-set version when there is one, and a modified tree.
func TestVersionStampedByGoBuild(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("skipping: needs git to make a checkout (apt-get install git)")
	}
	// A copy, not the caller's checkout: its state (a worktree, which the
	// go command does not stamp; uncommitted edits) must not matter.
	repo := t.TempDir()
	if err := copyModule("../..", repo); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=syngate test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "test checkout")
	head := git("rev-parse", "HEAD")[:12]
	bin := filepath.Join(t.TempDir(), "syngate")
	version := func(ldflags string) string {
		t.Helper()
		args := []string{"build", "-buildvcs=true", "-o", bin}
		if ldflags != "" {
			args = append(args, "-ldflags", ldflags)
		}
		cmd := exec.Command("go", append(args, "./cmd/syngate")...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		out, err := exec.Command(bin, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("syngate version: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got, want := version(""), regexp.MustCompile(`^syngate v0\.0\.0-\d{14}-`+head+` \(revision `+head+`, go[0-9.]+\)$`); !want.MatchString(got) {
		t.Errorf("clean checkout: %q, want to match %v", got, want)
	}
	if got, want := version("-X main.version=v1.2.0"), "syngate v1.2.0 (revision "+head+", "; !strings.HasPrefix(got, want) {
		t.Errorf("with a linker-set version: %q, want prefix %q", got, want)
	}
	if err := os.WriteFile(filepath.Join(repo, "cmd", "syngate", "zz_edit.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := version(""), "(revision "+head+"-dirty, "; !strings.Contains(got, want) || !strings.Contains(got, "+dirty") {
		t.Errorf("modified checkout: %q, want a +dirty version and %q", got, want)
	}
}

// copyModule copies the module's files, without VCS metadata, to dst.
func copyModule(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil // a worktree's .git file
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
