package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetcache/fleetcache/clusters"
)

func TestExampleConfigIsValid(t *testing.T) {
	c, err := Load("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Kubeconfig = []string{kubeconfig}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || len(c.Resources) != 9 || c.Resources[2].Name != "pods" || c.Cluster.RequestTimeout.Duration.Seconds() != 10 || c.API.ResponseCap() != 32<<20 {
		t.Errorf("example config read wrongly: %+v", c)
	}
}

func TestValidateReportsEveryProblemWithItsPath(t *testing.T) {
	raw := `
listen: "no-port"
kubeconfig: [/does/not/exist]
contexts:
  include: ["[unclosed"]
  aliases: {a: "Not_A_DNS_Name"}
resources:
  - name: ""
  - name: pods
    namespaces: ["Bad_NS"]
    labelSelector: "app in (a"
    fieldSelector: "spec.nodeName"
cluster:
  qps: -1
  requestTimeout: -5s
maxConcurrentInitialLists: -2
api: {maxResponseBytes: 1Ki, secretAnnotations: ["not a key!"]}
resyncPeriod: 0s
log: {level: loud, format: xml}
`
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"listen:", "kubeconfig[0]:", "contexts.include[0]:", "contexts.aliases[a]:",
		"resources[0].name:", "resources[1].namespaces[0]:", "resources[1].labelSelector:", "resources[1].fieldSelector:",
		"cluster.qps:", "cluster.requestTimeout:", "maxConcurrentInitialLists:", "api.maxResponseBytes:", "log.level:", "log.format:",
		"api.secretAnnotations[0]:", "resyncPeriod: Forbidden: removed",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not name %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(msg, "16 problems") {
		t.Errorf("want 16 problems counted:\n%s", msg)
	}
}

func TestUnknownFieldIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:1\nresourcez: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "resourcez") {
		t.Errorf("misspelt field: got %v, want an error naming it", err)
	}
}

// TestProbeBudgetAndMetrics: the budget defaults, is handed to the clusters, refuses a
// negative rate with its path; per-resource series are on unless turned off.
func TestProbeBudgetAndMetrics(t *testing.T) {
	c, err := Parse([]byte("kubeconfig: [/dev/null]\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	if c.ProbeBudget != clusters.DefaultProbeBudget || !c.Metrics.PerResourceSeries() || c.ClusterOptions().Budget == nil {
		t.Errorf("defaults: probeBudget %v, per-resource %v, budget %v", c.ProbeBudget, c.Metrics.PerResourceSeries(), c.ClusterOptions().Budget)
	}
	c, err = Parse([]byte("kubeconfig: [/dev/null]\nprobeBudget: -1\nmetrics: {perResource: false}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	if c.Metrics.PerResourceSeries() {
		t.Error("metrics.perResource: false ignored")
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "probeBudget:") {
		t.Errorf("negative probeBudget: %v", err)
	}
}
