package demo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// syngatePkg is the daemon's import path, built by BuildSyngate.
const syngatePkg = "github.com/syngate/syngate/cmd/syngate"

// BuildSyngate finds the syngate binary the demo runs: inside the syngate
// module (`go run ./cmd/syngate-demo`) it builds cmd/syngate from the same
// source into dir, so the demo shows the code it was started from;
// elsewhere it takes a syngate installed next to this executable or on
// PATH. The go command runs from the current directory.
func BuildSyngate(dir string) (string, error) {
	if mod, err := exec.Command("go", "list", "-m").Output(); err == nil && strings.TrimSpace(string(mod)) == "github.com/syngate/syngate" {
		out := filepath.Join(dir, "syngate")
		if o, err := exec.Command("go", "build", "-o", out, syngatePkg).CombinedOutput(); err != nil {
			return "", fmt.Errorf("build syngate: %w: %s", err, strings.TrimSpace(string(o)))
		}
		return out, nil
	}
	if self, err := os.Executable(); err == nil {
		sibling := filepath.Join(filepath.Dir(self), "syngate")
		if st, err := os.Stat(sibling); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return sibling, nil
		}
	}
	if p, err := exec.LookPath("syngate"); err == nil {
		return filepath.Abs(p)
	}
	return "", errors.New("no syngate binary: run the demo from the syngate source tree (sudo go run ./cmd/syngate-demo), install syngate next to syngate-demo or on PATH, or pass -syngate")
}
