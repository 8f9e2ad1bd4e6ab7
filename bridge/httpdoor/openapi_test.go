package httpdoor_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/invokeari/invokeari/bridge/api"
	"github.com/invokeari/invokeari/bridge/httpdoor"
	"github.com/invokeari/invokeari/stasisapp"
)

// TestOpenAPIValid validates the served document against the OpenAPI 3.1 schema with
// libopenapi-validator.
func TestOpenAPIValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(httpdoor.OpenAPI)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1") {
		t.Errorf("OpenAPI version %q, want 3.1", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("build validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("invalid document: %s: %s", e.Message, e.Reason)
		}
	}
}

// oaDoc is the part of the document the coverage test reads.
type oaDoc struct {
	Paths map[string]map[string]json.RawMessage `json:"paths"`
	// Components.Schemas by name.
	Components struct {
		Schemas map[string]struct {
			Properties map[string]any `json:"properties"`
			Enum       []string       `json:"enum"`
		} `json:"schemas"`
	} `json:"components"`
}

type oaOperation struct {
	Parameters []struct {
		Name string `json:"name"`
		In   string `json:"in"`
	} `json:"parameters"`
	Responses map[string]any `json:"responses"`
}

func loadDoc(t *testing.T) oaDoc {
	t.Helper()
	var d oaDoc
	if err := json.Unmarshal(httpdoor.OpenAPI, &d); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return d
}

// operation returns the operation of method on path, with the path-level parameters.
func (d oaDoc) operation(t *testing.T, method, path string) (oaOperation, bool) {
	t.Helper()
	item, ok := d.Paths[path]
	if !ok {
		return oaOperation{}, false
	}
	raw, ok := item[strings.ToLower(method)]
	if !ok {
		return oaOperation{}, false
	}
	var op, shared oaOperation
	if err := json.Unmarshal(raw, &op); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if p, ok := item["parameters"]; ok {
		if err := json.Unmarshal(p, &shared.Parameters); err != nil {
			t.Fatalf("%s parameters: %v", path, err)
		}
		op.Parameters = append(op.Parameters, shared.Parameters...)
	}
	return op, true
}

func (op oaOperation) params(in string) []string {
	var out []string
	for _, p := range op.Parameters {
		if p.In == in {
			out = append(out, p.Name)
		}
	}
	return out
}

// TestOpenAPICoversHandlers fails when a route, request field, status code or error
// code the handlers use is missing from the document. Every list is derived from the
// code: the handler's registered patterns, the api field tables, the Code* constants
// and the status codes the packages write.
func TestOpenAPICoversHandlers(t *testing.T) {
	d := loadDoc(t)
	// Every optional route on: the door is only built, never served, so the App is nil.
	h := httpdoor.New(httpdoor.Config{Calls: (*stasisapp.App)(nil), Metrics: http.NotFoundHandler()})

	t.Run("routes", func(t *testing.T) {
		for _, pattern := range h.Routes() {
			method, path, found := strings.Cut(pattern, " ")
			if !found {
				// A method-less pattern: its handler checks the method itself; the path
				// must be documented with at least one operation.
				path = method
				if len(d.Paths[path]) == 0 {
					t.Errorf("route %q is not in the document", pattern)
				}
				continue
			}
			if _, ok := d.operation(t, method, path); !ok {
				t.Errorf("route %q is not in the document", pattern)
			}
		}
	})

	t.Run("fields", func(t *testing.T) {
		for _, schema := range []string{"OriginateForm", "OriginateRequest"} {
			missing(t, "schema "+schema, api.FieldNames(), keys(d.Components.Schemas[schema].Properties))
		}
		missing(t, "schema ControlRequest", api.ControlFieldNames(), keys(d.Components.Schemas["ControlRequest"].Properties))
		list, _ := d.operation(t, http.MethodGet, "/v2/calls")
		missing(t, "GET /v2/calls query", api.ListFieldNames(), list.params("query"))
		for _, m := range []string{http.MethodGet, http.MethodDelete} {
			op, _ := d.operation(t, m, "/v2/calls/{id}")
			missing(t, m+" /v2/calls/{id} path", []string{"id"}, op.params("path"))
		}
		del, _ := d.operation(t, http.MethodDelete, "/v2/calls/{id}")
		var hangupQuery []string
		for _, f := range api.ControlFieldNames() {
			if f != "id" { // the id is the path value
				hangupQuery = append(hangupQuery, f)
			}
		}
		missing(t, "DELETE /v2/calls/{id} query", hangupQuery, del.params("query"))
	})

	t.Run("error codes", func(t *testing.T) {
		codes := stringConsts(t, "../api", "Code")
		if len(codes) < 30 {
			t.Fatalf("found only %d error codes in bridge/api: the scan is broken", len(codes))
		}
		missing(t, "ErrorCode enum", codes, d.Components.Schemas["ErrorCode"].Enum)
	})

	t.Run("status codes", func(t *testing.T) {
		var documented []string
		for path, item := range d.Paths {
			for method := range item {
				if method == "parameters" {
					continue
				}
				if op, ok := d.operation(t, method, path); ok {
					documented = append(documented, keys(op.Responses)...)
				}
			}
		}
		used := statusCodes(t, "../api", ".")
		if !slices.Contains(used, "404") || !slices.Contains(used, "202") {
			t.Fatalf("status scan found %v: the scan is broken", used)
		}
		missing(t, "responses", used, documented)
	})
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func missing(t *testing.T, where string, want, have []string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(have, w) {
			t.Errorf("%s: %q is used by the handlers but missing from openapi.json", where, w)
		}
	}
}

// parseDir parses the non-test Go files of dir.
func parseDir(t *testing.T, dir string) []*ast.File {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// stringConsts returns the values of the string constants in dir whose names start
// with prefix.
func stringConsts(t *testing.T, dir, prefix string) []string {
	t.Helper()
	var out []string
	for _, f := range parseDir(t, dir) {
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, prefix) || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					out = append(out, s)
				}
			}
			return true
		})
	}
	return out
}

// statusCodes returns the HTTP status codes the code in dirs can reply with: every
// net/http Status constant it names and every integer literal it passes as a status to
// newError.
func statusCodes(t *testing.T, dirs ...string) []string {
	t.Helper()
	byName := map[string]int{}
	for code := 100; code < 600; code++ {
		if text := http.StatusText(code); text != "" {
			byName["Status"+strings.NewReplacer(" ", "", "-", "", "'", "").Replace(text)] = code
		}
	}
	byName["StatusOK"] = http.StatusOK
	seen := map[string]bool{}
	for _, dir := range dirs {
		for _, f := range parseDir(t, dir) {
			ast.Inspect(f, func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.SelectorExpr:
					if pkg, ok := x.X.(*ast.Ident); ok && pkg.Name == "http" && strings.HasPrefix(x.Sel.Name, "Status") &&
						x.Sel.Name != "StatusText" {
						code, ok := byName[x.Sel.Name]
						if !ok {
							t.Errorf("status constant http.%s not understood by the scan", x.Sel.Name)
						}
						seen[strconv.Itoa(code)] = true
					}
				case *ast.CallExpr:
					if fn, ok := x.Fun.(*ast.Ident); ok && fn.Name == "newError" && len(x.Args) > 0 {
						if lit, ok := x.Args[0].(*ast.BasicLit); ok && lit.Kind == token.INT {
							seen[lit.Value] = true
						}
					}
				}
				return true
			})
		}
	}
	return keys(seen)
}
