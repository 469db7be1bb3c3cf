// Command testlog reads `go test -json` on stdin and prints what a person
// wants from CI: a line per package, the output of every failed test, and
// every skipped test with its reason. It exits 1 when a test or package
// failed, or when a test skipped for any reason but a missing peer package
// (a skip message that names the package to install: "apt-get install X").
//
//	go test -json ./... | go run ./.ci/testlog
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	output := map[string]*strings.Builder{} // package + test -> output
	failed, badSkips := false, 0
	var skips []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Println(sc.Text()) // build errors and the like come as text
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			b := output[key]
			if b == nil {
				b = &strings.Builder{}
				output[key] = b
			}
			b.WriteString(e.Output)
		case "fail":
			failed = true
			if e.Test != "" {
				fmt.Printf("--- FAIL: %s %s (%.1fs)\n%s", e.Package, e.Test, e.Elapsed, text(output[key]))
			} else {
				fmt.Printf("FAIL\t%s\t%.1fs\n", e.Package, e.Elapsed)
				if e.Elapsed == 0 { // a build failure or a crash outside tests
					fmt.Print(text(output[key]))
				}
			}
		case "pass":
			if e.Test == "" {
				fmt.Printf("ok  \t%s\t%.1fs\n", e.Package, e.Elapsed)
			}
		case "skip":
			if e.Test == "" {
				fmt.Printf("?   \t%s\t[no test files]\n", e.Package)
				break
			}
			msg := text(output[key])
			skips = append(skips, fmt.Sprintf("%s %s:\n%s", e.Package, e.Test, msg))
			if !strings.Contains(msg, "apt-get install") {
				badSkips++
			}
		}
		if e.Action == "pass" || e.Action == "fail" || e.Action == "skip" {
			delete(output, key)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Println("testlog:", err)
		os.Exit(1)
	}
	if len(skips) > 0 {
		fmt.Printf("\n%d skipped tests (only a missing peer package, named with its apt-get install line, may skip):\n", len(skips))
		for _, s := range skips {
			fmt.Print(s)
		}
	}
	if badSkips > 0 {
		fmt.Printf("%d tests skipped for another reason\n", badSkips)
		os.Exit(1)
	}
	if failed {
		os.Exit(1)
	}
}

func text(b *strings.Builder) string {
	if b == nil {
		return ""
	}
	return b.String()
}
