// Package buildinfo says which syngate a binary is: its version and the VCS
// revision it was built from. A release build may set both with the linker
// (-ldflags "-X main.version=v1.2.0 -X main.revision=abc..."); otherwise
// they come from what the go command stamped into the binary
// (runtime/debug.ReadBuildInfo): the module version for
// `go install ...@v1.2.0`, the commit and whether the tree was modified
// for a `go build` in a git checkout.
//
//	info := buildinfo.Read(version, revision)
//	fmt.Println(info) // v1.2.0 (revision 0123456789ab, go1.26.8)
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Unknown stands for a version or revision the binary does not know.
const Unknown = "unknown"

// Info is a binary's identity.
type Info struct {
	// Version is the linker-set version, else the main module's version
	// (a tag or pseudo-version), else "devel" for a build from source.
	Version string
	// Revision is the linker-set revision, else the commit the go command
	// stamped, shortened to 12 hex digits, with "-dirty" when the tree had
	// uncommitted changes; Unknown without either.
	Revision string
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Read returns the binary's identity; version and revision are the
// linker-set values and win when not empty.
func Read(version, revision string) Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return fromBuildInfo(bi, version, revision)
}

func fromBuildInfo(bi *debug.BuildInfo, version, revision string) Info {
	info := Info{Version: version, Revision: revision, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Revision == "" {
			info.Revision = vcsRevision(bi)
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Revision == "" {
		info.Revision = Unknown
	}
	return info
}

// vcsRevision reads the vcs.revision and vcs.modified settings.
func vcsRevision(bi *debug.BuildInfo) string {
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "-dirty"
	}
	return rev
}

// String formats the identity for humans: "v1.2.0 (revision 0123456789ab,
// go1.26.8)".
func (i Info) String() string {
	return fmt.Sprintf("%s (revision %s, %s)", i.Version, i.Revision, i.GoVersion)
}
