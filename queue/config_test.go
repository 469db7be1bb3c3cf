package queue

import (
	"errors"
	"testing"
	"time"

	"github.com/syngate/syngate/spec"
)

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*Config)
		ok   bool
	}{
		{"test default", nil, true},
		{"zero backlog with always", func(c *Config) { c.MaxSynBacklog, c.Cookies = 0, spec.CookiesAlways }, true},
		{"zero backlog with auto", func(c *Config) { c.MaxSynBacklog = 0 }, false},
		{"negative syn backlog", func(c *Config) { c.MaxSynBacklog = -1 }, false},
		{"huge syn backlog", func(c *Config) { c.MaxSynBacklog = MaxQueueLen + 1 }, false},
		{"retries 0", func(c *Config) { c.SynAckRetries = 0 }, true},
		{"retries 10", func(c *Config) { c.SynAckRetries = spec.MaxSynAckRetries }, true},
		{"retries 11", func(c *Config) { c.SynAckRetries = spec.MaxSynAckRetries + 1 }, false},
		{"negative peer checks", func(c *Config) { c.PeerCookieChecks = -1 }, false},
		{"negative retries", func(c *Config) { c.SynAckRetries = -1 }, false},
		{"bad cookie policy", func(c *Config) { c.Cookies = "sometimes" }, false},
		{"bad overflow policy", func(c *Config) { c.Overflow = "" }, false},
		{"zero backlog", func(c *Config) { c.Backlog = 0 }, false},
		{"zero somaxconn", func(c *Config) { c.Somaxconn = 0 }, false},
		{"huge accept queue", func(c *Config) { c.Backlog, c.Somaxconn = MaxQueueLen+1, MaxQueueLen+1 }, false},
		{"huge backlog capped by somaxconn", func(c *Config) { c.Backlog = 1 << 30 }, true},
		{"negative tick", func(c *Config) { c.CookieTick = -time.Second }, false},
		{"negative resend disables", func(c *Config) { c.ResendInterval = -1 }, true},
		{"shards 3", func(c *Config) { c.Shards = 3 }, false},
		{"shards 512", func(c *Config) { c.Shards = 512 }, false},
		{"shards 16", func(c *Config) { c.Shards = 16 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := NewListener(testConfig(tt.mut))
			if tt.ok && err != nil {
				t.Fatalf("NewListener: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("NewListener error %v, want ErrInvalidConfig", err)
			}
			if !tt.ok && l != nil {
				t.Fatal("NewListener returned a listener with an error")
			}
		})
	}
	if _, err := NewListener(DefaultConfig()); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := testConfig(nil).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.CookieTick != DefaultCookieTick || c.ResendInterval != DefaultResendInterval || c.Shards != 1 {
		t.Errorf("defaults: tick %s resend %s shards %d", c.CookieTick, c.ResendInterval, c.Shards)
	}
	for _, tt := range []struct{ backlog, shards int }{{1, 1}, {511, 1}, {512, 2}, {1024, 4}, {4096, 16}, {1 << 20, 64}} {
		if got := autoShards(tt.backlog); got != tt.shards {
			t.Errorf("autoShards(%d) = %d, want %d", tt.backlog, got, tt.shards)
		}
	}
	l := newTestListener(t, func(c *Config) { c.Backlog, c.Somaxconn = 1000, 16 })
	if l.AcceptQueueCap() != 16 {
		t.Errorf("accept queue cap %d, want min(backlog, somaxconn) = 16", l.AcceptQueueCap())
	}
	l = newTestListener(t, func(c *Config) { c.Backlog, c.Somaxconn = 3, 16 })
	if l.AcceptQueueCap() != 3 {
		t.Errorf("accept queue cap %d, want min(backlog, somaxconn) = 3", l.AcceptQueueCap())
	}
}
