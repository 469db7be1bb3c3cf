package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/syngate/syngate", Version: "v0.0.0-20261203094217-0123456789ab"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.modified", Value: "false"},
		},
	}
	dirty := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/syngate/syngate", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "fedcba9876543210fedcba9876543210fedcba98"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tc := range []struct {
		name          string
		bi            *debug.BuildInfo
		ldVer, ldRev  string
		wantV, wantR  string
		wantGoVersion string
	}{
		{"stamped by go build", stamped, "", "", "v0.0.0-20261203094217-0123456789ab", "0123456789ab", "go1.26.8"},
		{"modified tree", dirty, "", "", "devel", "fedcba987654-dirty", ""},
		{"linker flags win", stamped, "v1.2.0", "abc", "v1.2.0", "abc", "go1.26.8"},
		{"linker version only", dirty, "v1.2.0", "", "v1.2.0", "fedcba987654-dirty", ""},
		{"nothing known", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "", "", "devel", Unknown, ""},
		{"no build info", nil, "", "", "devel", Unknown, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fromBuildInfo(tc.bi, tc.ldVer, tc.ldRev)
			if got.Version != tc.wantV || got.Revision != tc.wantR {
				t.Errorf("got %+v, want version %q revision %q", got, tc.wantV, tc.wantR)
			}
			if tc.wantGoVersion != "" && got.GoVersion != tc.wantGoVersion {
				t.Errorf("go version %q, want %q", got.GoVersion, tc.wantGoVersion)
			}
			if got.GoVersion == "" {
				t.Error("no go version")
			}
		})
	}
}

func TestReadInTestBinary(t *testing.T) {
	// A test binary has build info (without VCS settings: go test does
	// not stamp them).
	info := Read("", "")
	if info.Version == "" || info.Revision == "" || info.GoVersion == "" {
		t.Errorf("Read() = %+v", info)
	}
	if got := (Info{Version: "v1.2.0", Revision: "0123456789ab", GoVersion: "go1.26.8"}).String(); got != "v1.2.0 (revision 0123456789ab, go1.26.8)" {
		t.Errorf("String() = %q", got)
	}
}
