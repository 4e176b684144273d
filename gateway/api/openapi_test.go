package api_test

import (
	"os"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// openapi.yaml describes every route the server has, and only those.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(data, &spec); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.") {
		t.Errorf("openapi: %q, want 3.x", spec.OpenAPI)
	}
	described := map[string]map[string]any{}
	for path, ops := range spec.Paths {
		for method, op := range ops {
			described[strings.ToUpper(method)+" "+path] = op
		}
	}
	a := newTestAPI(t)
	served := map[string]bool{}
	for _, r := range a.srv.Routes() {
		served[r] = true
		op, ok := described[r]
		if !ok {
			t.Errorf("route %s is not in openapi.yaml", r)
			continue
		}
		if _, ok := op["responses"]; !ok {
			t.Errorf("%s: no responses", r)
		}
		sec, hasSec := op["security"]
		open := hasSec && len(sec.([]any)) == 0
		if open != (r == "GET /healthz") {
			t.Errorf("%s: documented as open=%v", r, open)
		}
		if strings.Contains(r, "{id}") && !strings.Contains(yamlString(t, op), "parameters/id") {
			t.Errorf("%s: the id parameter is not described", r)
		}
	}
	var stale []string
	for r := range described {
		if !served[r] {
			stale = append(stale, r)
		}
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Errorf("openapi.yaml describes routes the server does not have: %v", stale)
	}
}

func yamlString(t *testing.T, v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
