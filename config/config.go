// Package config reads and validates the YAML file operators write.
//
// Parsing is strict: an unknown key or a value of the wrong type is an error
// naming its line, and Load returns a Config only after every check passed,
// so a caller can swap it in whole or not at all.
//
//	f, err := os.Open("/etc/syngate/syngate.yaml")
//	...
//	cfg, err := config.Parse(f)
//	if err != nil {
//		return fmt.Errorf("load config: %w", err) // "services[1] (line 23): listen: port 0 out of range"
//	}
//
// Every default is documented on the field that has one and in README.md.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrInvalid is wrapped by every validation error, so callers can tell a
// bad file from an unreadable one.
var ErrInvalid = errors.New("invalid config")

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	cfg, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// maxFileSize bounds what Parse reads: a config is a few kilobytes, and a
// mistaken path to a huge file should fail fast instead of eating memory.
const maxFileSize = 1 << 20

// Parse reads a YAML config from r, applies defaults and validates it.
func Parse(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: file larger than %d bytes", ErrInvalid, maxFileSize)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, fmt.Errorf("%w: empty file", ErrInvalid)
	}
	v := validator{lines: lineIndex(&root), typeLines: map[int]bool{}}
	// Every problem is collected before anything is reported: unknown keys,
	// values of the wrong type, then the checks of the values that did
	// decode, so one run of `syngate check` lists them all.
	v.unknownKeys(&root)
	var f file
	if err := root.Decode(&f); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		v.typeErrors(te, &root)
	}
	cfg := v.build(&f)
	if len(v.errs) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrInvalid, v.report())
	}
	return cfg, nil
}

// lineIndex maps dotted paths ("services.1.listen") to the line they start
// on, so validation messages can point at the offending line.
func lineIndex(root *yaml.Node) map[string]int {
	lines := make(map[string]int)
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if path != "" {
			lines[path] = n.Line
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				lines[p] = k.Line
				walk(n.Content[i+1], p)
				lines[p] = k.Line
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s.%d", path, i))
			}
		}
	}
	walk(root, "")
	return lines
}
