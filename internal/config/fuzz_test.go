package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzParseAndValidate: any input either parses and validates to an error naming field
// paths, or is rejected by the parser; nothing panics.
func FuzzParseAndValidate(f *testing.F) {
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("listen: 0.0.0.0:80\n"))
	f.Add([]byte("resources: [{name: pods, labelSelector: 'a in (b'}]\n"))
	f.Add([]byte("contexts: {include: ['[']}\ncluster: {qps: -1}\n"))
	f.Add([]byte(`{"readiness": {"policy": "atLeast"}, "resources": [{"name": "x", "indexes": [{"name": "n", "jsonPath": "{.a["}]}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := Parse(raw)
		if err != nil {
			return
		}
		c.Kubeconfig = append(c.Kubeconfig, "/nonexistent/kubeconfig") // no filesystem defaults
		c.SetDefaults()
		if err := c.Validate(); err != nil && !strings.Contains(err.Error(), "invalid configuration") {
			t.Errorf("validation error without the summary: %v", err)
		}
	})
}
