package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
)

// DefaultPath is where the daemon listens unless configured otherwise.
const DefaultPath = "/run/syngate/control.sock"

// Client talks to a daemon's control socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client of the socket at path.
func NewClient(path string) *Client {
	return &Client{path: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}}
}

// Status reads the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.get(ctx, "/v1/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Flows reads at most limit (0: all) of the flows f selects.
func (c *Client) Flows(ctx context.Context, f Filter, limit int) (*FlowList, error) {
	q := url.Values{}
	for k, v := range map[string]string{"service": f.Service, "client": f.Client, "backend": f.Backend} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out FlowList
	if err := c.get(ctx, "/v1/flows?"+q.Encode(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Drain starts a drain (withdraw the VIPs, keep serving) and returns the
// state after it; a second call changes nothing.
func (c *Client) Drain(ctx context.Context) (*Drain, error) {
	var d Drain
	if err := c.do(ctx, http.MethodPost, "/v1/drain", &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// DrainState reads the drain state without changing it.
func (c *Client) DrainState(ctx context.Context) (*Drain, error) {
	var d Drain
	if err := c.get(ctx, "/v1/drain", &d); err != nil {
		return nil, err
	}
	return &d, nil
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	return c.do(ctx, http.MethodGet, path, v)
}

func (c *Client) do(ctx context.Context, method, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://syngate"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("control socket %s (is syngate running, and may this user read the socket?): %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("control %s: %s: %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	return nil
}
