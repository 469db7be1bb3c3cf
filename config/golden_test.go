package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestErrorGolden")

// TestErrorGolden pins the whole message an operator reads for each file in
// testdata/errors: every problem of the file at once, in file order, each
// with its line. Run with -update after a deliberate change and read the
// diff.
func TestErrorGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/errors/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(path, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	known := yamlFields(reflectFlows())
	for in, want := range map[string]string{
		"establised_timeout": "established_timeout",
		"max":                "max",
		"mxa":                "max",
		"close_timout":       "close_timeout",
		"reset":              "",
		"colour":             "",
	} {
		if got := suggest(in, known); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func reflectFlows() reflect.Type { return reflect.TypeOf(file{}.Flows) }
