// Command packaging builds syngate's Debian package from nfpm.yaml with
// nfpm as a library. It is a module of its own so that nfpm's dependencies
// stay out of the daemon's module graph.
//
//	go build -o /tmp/syngate ../cmd/syngate
//	go run . -binary /tmp/syngate -version 0.1.0 -out /tmp
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "packaging:", err)
		os.Exit(1)
	}
}

func run() error {
	binary := flag.String("binary", "", "the syngate `binary` to package (required)")
	version := flag.String("version", "0.0.0~dev", "package `version`")
	arch := flag.String("arch", "amd64", "Debian `architecture` of the binary")
	config := flag.String("config", "nfpm.yaml", "nfpm `config`, paths relative to its directory")
	out := flag.String("out", ".", "output `directory`")
	flag.Parse()
	if *binary == "" {
		return errors.New("-binary is required")
	}
	bin, err := filepath.Abs(*binary)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return err
	}
	// nfpm resolves the contents' relative paths against the working
	// directory: run from the config's.
	cfgPath, err := filepath.Abs(*config)
	if err != nil {
		return err
	}
	outDir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	if err := os.Chdir(filepath.Dir(cfgPath)); err != nil {
		return err
	}
	vars := map[string]string{"BINARY": bin, "VERSION": *version, "ARCH": *arch}
	cfg, err := nfpm.ParseFileWithEnvMapping(cfgPath, func(k string) string { return vars[k] })
	if err != nil {
		return fmt.Errorf("parse %s: %w", cfgPath, err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return err
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return err
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	info.Target = filepath.Join(outDir, pkg.ConventionalFileName(info))
	f, err := os.Create(info.Target)
	if err != nil {
		return err
	}
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(info.Target)
		return fmt.Errorf("build package: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Println(info.Target)
	return nil
}
