package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// ReloadPath is the endpoint that makes the daemon re-read its config file
// and apply it (POST). It answers 200 with a ReloadResult when the file
// was applied, and 422 with a ReloadResult whose Error says why when it was
// refused (nothing of it applied).
const ReloadPath = "/v1/reload"

// ReloadResult is the outcome of a reload.
type ReloadResult struct {
	// Error is why the reload was refused; empty when it was applied.
	Error string `json:"error,omitempty"`
	// Added, Changed and Removed name the services by name; Repooled
	// names those that kept their state but got a new pool (backends,
	// weights: members that stay keep their health and connections);
	// Unchanged counts those that kept their state and pool.
	Added     []string `json:"added,omitempty"`
	Changed   []string `json:"changed,omitempty"`
	Repooled  []string `json:"repooled,omitempty"`
	Removed   []string `json:"removed,omitempty"`
	Unchanged int      `json:"unchanged"`
	// Applied lists the other keys the reload changed (filters.*,
	// flows.*_timeout, backend.connect_timeout, backend.probe_interval).
	Applied []string `json:"applied,omitempty"`
}

// ServeReload writes r with the status a reload endpoint answers.
func ServeReload(w http.ResponseWriter, r ReloadResult) {
	if r.Error != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		json.NewEncoder(w).Encode(r)
		return
	}
	writeJSON(w, r)
}

// Reload asks the daemon to re-read and apply its config file. A refused
// reload returns the result and an error carrying its reason.
func (c *Client) Reload(ctx context.Context) (*ReloadResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://syngate"+ReloadPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control socket %s (is syngate running, and may this user write the socket?): %w", c.path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var out ReloadResult
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("control %s: %s: %s", ReloadPath, resp.Status, body)
	}
	if resp.StatusCode != http.StatusOK {
		if out.Error == "" {
			out.Error = resp.Status
		}
		return &out, fmt.Errorf("reload refused: %s", out.Error)
	}
	return &out, nil
}
