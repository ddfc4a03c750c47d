package schemas

import (
	"crypto/sha256"
	"embed"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/parser"
	"k8s.io/utils/lru"
)

//go:embed *.cue
var files embed.FS

// recompileAfter bounds the growth of a long-lived cue.Context (every
// evaluation interns into it): after this many validations the schema is
// compiled afresh in a new context, costing about a quarter millisecond.
const recompileAfter = 20000

type compiled struct {
	ctx *cue.Context
	// restore and drill are the two kinds of spec the contract defines.
	restore, drill kind
	refused        []refusal
	// crossplane is #CrossplaneFields.
	crossplane []string
	uses       int
}

type refusal struct {
	Path []string `json:"path"`
	Msg  string   `json:"msg"`
}

var (
	mu  sync.Mutex
	cur *compiled

	// results caches validations by the content of the spec and the
	// policy. A restore's spec is immutable, and Crossplane calls the
	// function for the same XR on every reconcile, so nearly every call
	// after the first is a hit. Least recently used first out, so memory
	// stays flat.
	results = lru.New(maxResults)
)

// maxResults bounds the validation cache.
const maxResults = 4096

type result struct {
	spec *Spec
	vs   []Violation
}

// Sources returns the embedded CUE files, for tools that export the schema.
func Sources() embed.FS { return files }

// compile compiles the embedded schema: at first use, and again in a
// fresh context after every recompileAfter validations.
func compile() (*compiled, error) {
	ctx := cuecontext.New()
	v, err := Build(ctx)
	if err != nil {
		return nil, err
	}
	c := &compiled{
		ctx:     ctx,
		restore: kind{name: ClaimKind, spec: v.LookupPath(cue.ParsePath("#Spec")), check: v.LookupPath(cue.ParsePath("#Check")), defaults: "#BoundedDefaults"},
		drill:   kind{name: DrillClaimKind, spec: v.LookupPath(cue.ParsePath("#DrillSpec")), check: v.LookupPath(cue.ParsePath("#DrillCheck")), defaults: "#DrillBoundedDefaults"},
	}
	if err := v.LookupPath(cue.ParsePath("#Refused")).Decode(&c.refused); err != nil {
		return nil, fmt.Errorf("schemas: decode #Refused: %w", err)
	}
	// The spec fields Crossplane writes into an XR, which are not part of
	// the restore's contract.
	if err := v.LookupPath(cue.ParsePath("#CrossplaneFields")).Decode(&c.crossplane); err != nil {
		return nil, fmt.Errorf("schemas: decode #CrossplaneFields: %w", err)
	}
	for _, k := range []*kind{&c.restore, &c.drill} {
		defaults, err := boundedDefaults(v, k.defaults)
		if err != nil {
			return nil, err
		}
		for _, d := range defaults {
			sel := make([]cue.Selector, len(d.Path))
			for i, p := range d.Path {
				sel[i] = cue.Str(p)
			}
			k.spec = k.spec.FillPath(cue.MakePath(sel...), ctx.CompileString(fmt.Sprintf("*%d | _", d.Value)))
		}
	}
	return c, nil
}

// kind is one definition of the contract: its spec, its rules and the
// defaults of its bounded numbers.
type kind struct {
	name, defaults string
	spec, check    cue.Value
}

// BoundedDefault is the default of a bounded number in the spec.
type BoundedDefault struct {
	Path  []string `json:"path"`
	Value int64    `json:"value"`
}

// boundedDefaults reads a list of defaults (#BoundedDefaults,
// #DrillBoundedDefaults) from the compiled schema.
func boundedDefaults(v cue.Value, def string) ([]BoundedDefault, error) {
	var ds []BoundedDefault
	if err := v.LookupPath(cue.ParsePath(def)).Decode(&ds); err != nil {
		return nil, fmt.Errorf("schemas: decode %s: %w", def, err)
	}
	return ds, nil
}

// Build compiles the embedded CUE package into ctx.
func Build(ctx *cue.Context) (cue.Value, error) {
	entries, err := files.ReadDir(".")
	if err != nil {
		return cue.Value{}, err
	}
	inst := build.NewContext().NewInstance("", nil)
	for _, e := range entries {
		src, err := files.ReadFile(e.Name())
		if err != nil {
			return cue.Value{}, err
		}
		f, err := parser.ParseFile(e.Name(), src, parser.ParseComments)
		if err != nil {
			return cue.Value{}, fmt.Errorf("schemas: parse %s: %w", e.Name(), err)
		}
		if err := inst.AddSyntax(f); err != nil {
			return cue.Value{}, err
		}
	}
	v := ctx.BuildInstance(inst)
	if err := v.Err(); err != nil {
		return cue.Value{}, fmt.Errorf("schemas: build: %w", err)
	}
	return v, nil
}

func acquire() (*compiled, error) {
	if cur == nil || cur.uses >= recompileAfter {
		c, err := compile()
		if err != nil {
			return nil, err
		}
		cur = c
	}
	return cur, nil
}

// Validate checks an XR's spec (Crossplane's own fields are ignored) against
// the contract and the policy. It returns the spec with every default
// applied, or the violations, each naming the field and the fix, sorted by
// path. Results are shared between calls: callers must not modify them.
func Validate(spec map[string]any, p Policy) (*Spec, []Violation, error) {
	mu.Lock()
	defer mu.Unlock()

	in, _ := normalize(spec).(map[string]any)
	if in == nil {
		in = map[string]any{}
	}
	c, err := acquire()
	if err != nil {
		return nil, nil, err
	}
	for _, f := range c.crossplane {
		delete(in, f)
	}

	key, keyed := cacheKey(in, p)
	if keyed {
		if r, ok := results.Get(key); ok {
			return r.(result).spec, r.(result).vs, nil
		}
	}
	c.uses++
	out, vs, err := c.validate(in, p)
	if err != nil {
		return nil, nil, err
	}
	if keyed {
		results.Add(key, result{spec: out, vs: vs})
	}
	return out, vs, nil
}

// cacheKey hashes the spec and the policy; encoding/json sorts map keys, so
// equal content gives equal keys.
func cacheKey(in map[string]any, p Policy) ([32]byte, bool) {
	b, err := json.Marshal(struct {
		S map[string]any
		P Policy
	}{in, p})
	if err != nil {
		return [32]byte{}, false
	}
	return sha256.Sum256(b), true
}

func (c *compiled) validate(in map[string]any, p Policy) (*Spec, []Violation, error) {
	var vs []Violation
	for _, r := range c.refused {
		if has(in, r.Path) {
			vs = append(vs, Violation{Path: "spec." + strings.Join(r.Path, "."), Message: r.Msg})
			deletePath(in, r.Path)
		}
	}

	out := &Spec{}
	vs, err := c.evaluate(c.restore, in, p, vs, out)
	if err != nil || len(vs) > 0 {
		return nil, vs, err
	}
	return out, nil, nil
}

// evaluate checks in against the kind's definition, then (when it fits
// and nothing was refused before, pre) against its rules, and decodes the
// defaulted spec into out when all is well.
func (c *compiled) evaluate(k kind, in map[string]any, p Policy, pre []Violation, out any) ([]Violation, error) {
	v := k.spec.Unify(c.ctx.Encode(in))
	if err := v.Validate(cue.Concrete(true)); err != nil {
		return sortViolations(append(pre, explain(k, err, in)...)), nil
	}
	if len(pre) > 0 {
		return sortViolations(pre), nil
	}

	// The rules see the concrete, defaulted data: an absent optional
	// field is then simply absent, which CUE comprehensions can test.
	raw, err := v.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("schemas: encode spec: %w", err)
	}
	var data any
	if err := json.Unmarshal(raw, &data); err != nil {
		return nil, fmt.Errorf("schemas: decode spec: %w", err)
	}
	var vs []Violation
	chk := k.check.FillPath(cue.ParsePath("spec"), c.ctx.Encode(data)).FillPath(cue.ParsePath("policy"), c.ctx.Encode(p))
	if err := chk.LookupPath(cue.ParsePath("violations")).Decode(&vs); err != nil {
		return nil, fmt.Errorf("schemas: evaluate rules: %w", err)
	}
	if len(vs) > 0 {
		return sortViolations(vs), nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("schemas: decode spec: %w", err)
	}
	return nil, nil
}

// ResolveAuth says how the executor authenticates, given whether the
// cluster uses OIDC self-initialisation; a violation when it cannot.
func ResolveAuth(s *Spec, oidc bool) (Auth, *Violation) {
	switch {
	case s.Fresh():
		// The function adds this role to the new cluster's
		// self-initialisation.
		return Auth{Method: "jwt", Role: FreshJWTRole}, nil
	case s.JWTAuthRole != "":
		return Auth{Method: "jwt", Role: s.JWTAuthRole}, nil
	case s.TokenSecretRef != nil:
		return Auth{Method: "token"}, nil
	case oidc:
		return Auth{Method: "jwt", Role: DefaultJWTRole}, nil
	}
	return Auth{}, &Violation{Path: "spec", Message: "spec: no OpenBao authentication is configured: set spec.jwtAuthRole (a JWT auth role) or spec.tokenSecretRef (a Secret holding a token), or enable OIDC self-initialisation on the cluster"}
}

// DefaultJWTRole is the role openbao-operator's OIDC self-initialisation
// creates for restores.
const DefaultJWTRole = "openbao-operator-restore"
