package schemas

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"cuelang.org/go/cue"
	cueerrors "cuelang.org/go/cue/errors"
)

// explain turns CUE's errors into violations that name the field and, from
// the field's @fix attribute in the definition k (#Spec or #DrillSpec), the
// fix.
func explain(k kind, err error, in map[string]any) []Violation {
	seen := map[string]bool{}
	var out []Violation
	for _, e := range cueerrors.Errors(err) {
		path := e.Path()
		// Errors inside a disjunction or a definition carry the
		// definition's name first; the field path is what follows.
		for len(path) > 0 && strings.HasPrefix(path[0], "#") {
			path = path[1:]
		}
		p := "spec"
		if len(path) > 0 {
			p += "." + strings.Join(path, ".")
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		var msg string
		if fix, ok := k.fix(path); ok {
			// CUE's own words for a broken bound or disjunction are
			// noise to a user; the value and the fix are what help.
			msg = fmt.Sprintf("%s: invalid value %s: %s", p, valueAt(in, path), fix)
		} else {
			format, args := e.Msg()
			msg = p + ": " + fmt.Sprintf(format, args...)
		}
		out = append(out, Violation{Path: p, Message: msg})
	}
	return out
}

// fix is the @fix attribute of the field at path, or for a field the
// definition does not have, the advice to remove it.
func (k kind) fix(path []string) (string, bool) {
	if len(path) == 0 {
		return "", false
	}
	f := k.spec
	for _, p := range path {
		g := f.LookupPath(cue.MakePath(cue.Str(p)))
		if !g.Exists() {
			g = f.LookupPath(cue.MakePath(cue.Str(p).Optional()))
		}
		if !g.Exists() {
			return "it is not a field of an " + k.name + "; remove it (check its spelling)", true
		}
		f = g
	}
	a := f.Attribute("fix")
	s, err := a.String(0)
	if err != nil {
		return "", false
	}
	return s, true
}

// valueAt renders the input's value at path for a message, quoted and cut
// short: a message must stay readable and never echo a large blob.
func valueAt(m map[string]any, path []string) string {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return "(none)"
		}
		cur = mm[p]
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return "(unprintable)"
	}
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

// normalize deep-copies a JSON value and turns whole float64 numbers into
// int64. Crossplane hands XRs to functions as protobuf structs, whose
// numbers are all doubles: without this, CUE would see 4096.0, which is not
// an int, and refuse every integer field.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = normalize(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = normalize(e)
		}
		return l
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x)
		}
	}
	return v
}

func has(m map[string]any, path []string) bool {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = mm[p]; !ok {
			return false
		}
	}
	return true
}

// deletePath removes path from m (a private copy of the input).
func deletePath(m map[string]any, path []string) {
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return
		}
		m = next
	}
	delete(m, path[len(path)-1])
}

func sortViolations(vs []Violation) []Violation {
	sort.SliceStable(vs, func(i, j int) bool { return vs[i].Path < vs[j].Path })
	return vs
}
