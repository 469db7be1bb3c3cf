package cookie

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// MinSecretLen is the shortest master secret accepted: 16 bytes already
// match the 128-bit SipHash key it is stretched into.
const MinSecretLen = 16

// maxSecretLen bounds what LoadOrCreateSecret reads, so pointing it at a
// large file fails fast instead of loading it.
const maxSecretLen = 4096

// newSecretLen is the size of a secret LoadOrCreateSecret generates.
const newSecretLen = 32

var (
	// ErrSecretTooShort means the master secret has fewer than MinSecretLen bytes.
	ErrSecretTooShort = errors.New("cookie secret too short")
	// ErrSecretTooLong means the secret file exceeds 4 KiB, which is
	// certainly not a secret written for syngate.
	ErrSecretTooLong = errors.New("cookie secret file too long")
	// ErrSecretPermissions means the secret file is readable or writable by
	// group or others, or is not a regular file. Anyone who can read it can
	// forge cookies for every gateway sharing it.
	ErrSecretPermissions = errors.New("cookie secret file has unsafe permissions")
)

// LoadOrCreateSecret returns the master secret stored at path. If the file
// does not exist it creates it (and any missing directories, mode 0700) with
// 32 random bytes and mode 0600. The file holds raw bytes; gateways that
// must validate each other's cookies are given a copy of the same file.
//
// An existing file is refused when it is not a regular file, when its mode
// grants any access to group or others, or when it is shorter than
// MinSecretLen; the error wraps ErrSecretPermissions or ErrSecretTooShort.
// Creation is safe against a concurrent creator: the secret is written to a
// temporary file and linked into place, so a reader never sees half a secret
// and the first writer wins.
func LoadOrCreateSecret(path string) ([]byte, error) {
	secret, err := readSecret(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return secret, err
	}
	if err := createSecret(path); err != nil {
		return nil, err
	}
	return readSecret(path)
}

func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open cookie secret: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat cookie secret %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cookie secret %s is not a regular file (%s): %w", path, fi.Mode().Type(), ErrSecretPermissions)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("cookie secret %s has mode %#o, want 0600 or stricter (chmod 600 %s): %w", path, perm, path, ErrSecretPermissions)
	}
	secret, err := io.ReadAll(io.LimitReader(f, maxSecretLen+1))
	if err != nil {
		return nil, fmt.Errorf("read cookie secret %s: %w", path, err)
	}
	switch {
	case len(secret) > maxSecretLen:
		return nil, fmt.Errorf("cookie secret %s: more than %d bytes: %w", path, maxSecretLen, ErrSecretTooLong)
	case len(secret) < MinSecretLen:
		return nil, fmt.Errorf("cookie secret %s: %d bytes, need at least %d: %w", path, len(secret), MinSecretLen, ErrSecretTooShort)
	}
	return secret, nil
}

func createSecret(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create cookie secret directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".cookie-secret-*") // mode 0600
	if err != nil {
		return fmt.Errorf("create cookie secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	secret := make([]byte, newSecretLen)
	if _, err := rand.Read(secret); err != nil {
		tmp.Close()
		return fmt.Errorf("generate cookie secret: %w", err)
	}
	_, err = tmp.Write(secret)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write cookie secret %s: %w", tmp.Name(), err)
	}
	// Link fails if path appeared meanwhile; the other writer's secret wins.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("install cookie secret %s: %w", path, err)
	}
	return nil
}

// keyLabel separates cookie keys from anything else a deployment might
// derive from the same master secret.
const keyLabel = "syngate cookie siphash key v1"

// deriveKey computes the SipHash key of one epoch as
// HMAC-SHA256(master, label || epoch as 8 big-endian bytes), truncated to
// 128 bits. Every gateway holding master derives the same keys.
func deriveKey(master []byte, epoch int64) sipKey {
	mac := hmac.New(sha256.New, master)
	var msg [len(keyLabel) + 8]byte
	copy(msg[:], keyLabel)
	binary.BigEndian.PutUint64(msg[len(keyLabel):], uint64(epoch))
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	return sipKey{
		k0: binary.LittleEndian.Uint64(sum[0:8]),
		k1: binary.LittleEndian.Uint64(sum[8:16]),
	}
}
