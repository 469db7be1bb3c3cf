package cookie

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestLoadOrCreateSecretCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "cookie.key")
	s1, err := LoadOrCreateSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) != newSecretLen {
		t.Fatalf("created secret has %d bytes, want %d", len(s1), newSecretLen)
	}
	if bytes.Equal(s1, make([]byte, len(s1))) {
		t.Fatal("created secret is all zero")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("secret mode %#o, want 0600", perm)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		di, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if perm := di.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("created directory %s mode %#o, want 0700", d, perm)
		}
	}
	s2, err := LoadOrCreateSecret(path)
	if err != nil || !bytes.Equal(s1, s2) {
		t.Fatalf("second load: %x, %v; want the same %x", s2, err, s1)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}
	// A second fresh path gets a different secret.
	s3, err := LoadOrCreateSecret(filepath.Join(dir, "other.key"))
	if err != nil || bytes.Equal(s1, s3) {
		t.Fatalf("second secret %x (%v) equals the first", s3, err)
	}
}

// Gateways starting together must end up with one secret, not one each.
func TestLoadOrCreateSecretRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cookie.key")
	const n = 8
	var wg sync.WaitGroup
	got := make([][]byte, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = LoadOrCreateSecret(path)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || !bytes.Equal(got[i], got[0]) {
			t.Fatalf("loader %d: %x, %v; loader 0: %x", i, got[i], errs[i], got[0])
		}
	}
}

func TestLoadOrCreateSecretRejects(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is masked by umask
			t.Fatal(err)
		}
		return p
	}
	good := bytes.Repeat([]byte{7}, 32)
	cases := []struct {
		name string
		path string
		want error
	}{
		{"world readable", write("r644", good, 0o644), ErrSecretPermissions},
		{"group readable", write("r640", good, 0o640), ErrSecretPermissions},
		{"group writable", write("w620", good, 0o620), ErrSecretPermissions},
		{"short", write("short", good[:MinSecretLen-1], 0o600), ErrSecretTooShort},
		{"empty", write("empty", nil, 0o600), ErrSecretTooShort},
		{"huge", write("huge", make([]byte, maxSecretLen+1), 0o600), ErrSecretTooLong},
		{"directory", dir, ErrSecretPermissions},
	}
	for _, c := range cases {
		s, err := LoadOrCreateSecret(c.path)
		if !errors.Is(err, c.want) || s != nil {
			t.Errorf("%s: %x, %v; want %v", c.name, s, err, c.want)
		}
	}
	// Read-only for the owner is fine, and exactly MinSecretLen is enough.
	p := write("ro", good[:MinSecretLen], 0o400)
	if s, err := LoadOrCreateSecret(p); err != nil || !bytes.Equal(s, good[:MinSecretLen]) {
		t.Errorf("0400 file: %x, %v", s, err)
	}
	// Unreadable: only observable when not root (root reads any file).
	if os.Geteuid() != 0 {
		p := write("unreadable", good, 0o000)
		if s, err := LoadOrCreateSecret(p); err == nil || !errors.Is(err, os.ErrPermission) {
			t.Errorf("unreadable file: %x, %v", s, err)
		}
	}
	// A parent that cannot be created is reported, not papered over.
	blocker := write("blocker", good, 0o600)
	if _, err := LoadOrCreateSecret(filepath.Join(blocker, "cookie.key")); err == nil {
		t.Error("secret under a regular file: no error")
	}
}

// Different epochs and different masters give unrelated keys; the same
// inputs give the same key (what lets gateways share cookies).
func TestDeriveKey(t *testing.T) {
	a, b := []byte("master secret number one......."), []byte("master secret number two.......")
	if deriveKey(a, 5) != deriveKey(append([]byte(nil), a...), 5) {
		t.Fatal("same master and epoch gave different keys")
	}
	seen := map[sipKey]bool{}
	for _, m := range [][]byte{a, b} {
		for e := int64(-2); e < 50; e++ {
			k := deriveKey(m, e)
			if seen[k] {
				t.Fatalf("key repeated at epoch %d", e)
			}
			seen[k] = true
		}
	}
}
