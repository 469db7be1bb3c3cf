package config

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// unknownKeys walks the document against the file struct and reports every
// key the struct does not have, with the closest known key as a hint. yaml's
// own strict mode stops at Go type names ("field x not found in type struct
// { Max *int ... }"), which mean nothing to an operator.
func (v *validator) unknownKeys(root *yaml.Node) {
	v.walkKeys(root, reflect.TypeOf(file{}), "")
}

func (v *validator) walkKeys(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			v.walkKeys(c, t, path)
		}
	case yaml.AliasNode:
		if n.Alias != nil {
			v.walkKeys(n.Alias, t, path)
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			return // a type error, reported by the decoder
		}
		for i, c := range n.Content {
			v.walkKeys(c, t.Elem(), fmt.Sprintf("%s.%d", path, i))
		}
	case yaml.MappingNode:
		if t.Kind() != reflect.Struct || t == reflect.TypeOf(time.Duration(0)) {
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if !ok {
				v.unknown(k, path, fields)
				continue
			}
			v.walkKeys(val, ft, p)
		}
	}
}

func (v *validator) unknown(k *yaml.Node, path string, fields map[string]reflect.Type) {
	where := "at the top level"
	if path != "" {
		where = "in " + path
	}
	msg := fmt.Sprintf("unknown key `%s` %s", k.Value, where)
	if s := suggest(k.Value, fields); s != "" {
		msg += fmt.Sprintf(" (did you mean `%s`?)", s)
	} else {
		msg += fmt.Sprintf(" (known keys: %s)", strings.Join(sortedNames(fields), ", "))
	}
	v.add(k.Line, msg)
}

// yamlFields maps a struct's yaml keys to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		out[name] = f.Type
	}
	return out
}

func sortedNames(m map[string]reflect.Type) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// suggest returns the known key closest to s by edit distance, if it is
// close enough to be a typo: at most a third of the key's length, and at
// least 1 and at most 3 edits.
func suggest(s string, known map[string]reflect.Type) string {
	best, bestD := "", 0
	for _, k := range sortedNames(known) {
		d := editDistance(s, k)
		if best == "" || d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" || bestD > max(1, min(3, len(best)/3)) {
		return ""
	}
	return best
}

// editDistance is the Damerau-Levenshtein distance (optimal string
// alignment): a swap of two neighbours, the commonest typo, costs 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// typeErrorPattern matches one of yaml's type errors.
var typeErrorPattern = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")

// typeErrors turns yaml's type errors into operator messages ("line 7:
// services.0.backlog: `lots` is not an integer"), naming the key on that
// line when the document has one there.
func (v *validator) typeErrors(te *yaml.TypeError, root *yaml.Node) {
	scalars := scalarPaths(root)
	byLine := make(map[int]string)
	for p, l := range v.lines {
		// The shortest path on a line is the key the line starts with
		// (deeper ones are inside a flow-style value on the same line).
		if cur, ok := byLine[l]; !ok || len(p) < len(cur) || (len(p) == len(cur) && p < cur) {
			byLine[l] = p
		}
	}
	for _, e := range te.Errors {
		line := lineOf(e)
		msg := e
		if m := linePrefix.FindStringSubmatch(e); m != nil {
			msg = m[1]
		}
		if m := typeErrorPattern.FindStringSubmatch(e); m != nil {
			msg = fmt.Sprintf("%s is not %s", describeValue(m[2], m[3]), goTypeWords(m[4]))
			if m[2] == "int" {
				msg = fmt.Sprintf("%s is out of range: want %s", m[3], goTypeWords(m[4]))
			}
		}
		if line != 0 {
			v.typeLines[line] = true
		}
		p, ok := byLine[line]
		if m := typeErrorPattern.FindStringSubmatch(e); m != nil && m[3] != "" {
			// The scalar with the offending value names it exactly, also
			// inside a flow-style mapping ("syn: {key_rotation: soon}").
			for _, sp := range scalars[line] {
				if sp.value == m[3] {
					p, ok = sp.path, true
					break
				}
			}
		}
		if ok {
			msg = keyPath(p) + ": " + msg
		}
		v.add(line, msg)
	}
}

// linePrefix splits yaml's "line N: " off a message.
var linePrefix = regexp.MustCompile(`^line \d+: (.*)$`)

func describeValue(tag, value string) string {
	switch tag {
	case "map":
		return "a mapping"
	case "seq":
		return "a list"
	}
	return "`" + value + "`"
}

// goTypeWords says what a Go type of the file struct is in operator terms.
func goTypeWords(t string) string {
	switch {
	case t == "time.Duration":
		return "a duration (like 500ms, 10s, 2h)"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	case t == "uint8":
		return "an integer 0-255"
	case t == "uint16":
		return "an integer 0-65535"
	case t == "uint32":
		return "an integer 0-4294967295"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	default:
		return "a mapping"
	}
}

func lineOf(msg string) int {
	var n int
	fmt.Sscanf(msg, "line %d:", &n)
	return n
}

// keyPath drops the list indexes a path ends with: the key is what the
// operator wrote.
func keyPath(p string) string {
	for {
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			return p
		}
		if _, err := strconv.Atoi(p[i+1:]); err != nil {
			return p
		}
		p = p[:i]
	}
}

type scalarPath struct{ path, value string }

// scalarPaths lists each line's scalar values with their paths.
func scalarPaths(root *yaml.Node) map[int][]scalarPath {
	out := map[int][]scalarPath{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s.%d", path, i))
			}
		case yaml.ScalarNode:
			out[n.Line] = append(out[n.Line], scalarPath{path, n.Value})
		}
	}
	walk(root, "")
	return out
}
