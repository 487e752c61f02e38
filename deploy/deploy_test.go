// Package deploy holds the Kubernetes manifests; its tests render them with the real
// kubectl and apply them with server-side dry-run against a real local apiserver.
package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

var fleet *testfleet.Fleet

func TestMain(m *testing.M) { testfleet.Main(m, testfleet.Options{Clusters: 1}, &fleet) }

var kustomizations = []string{"base", "monitoring", "overlays/daemon", "overlays/sidecar", "overlays/sharded", "member"}

func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	bin := "kubectl"
	if dir := os.Getenv("FLEETCACHE_BIN"); dir != "" {
		bin = filepath.Join(dir, "kubectl")
	}
	if fleet != nil {
		args = append([]string{"--kubeconfig", fleet.Kubeconfig, "--context", fleet.Clusters[0].Name}, args...)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s%s", args, err, out, stderr.String())
	}
	return string(out)
}

// render returns the objects of a kustomization as generic maps.
func render(t *testing.T, dir string) []map[string]any {
	t.Helper()
	out := kubectl(t, "", "kustomize", dir)
	var objs []map[string]any
	for _, doc := range strings.Split(out, "\n---\n") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatal(err)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

// monitoringCRDs are the Prometheus Operator's CRDs, reduced to what a server-side dry
// run needs.
const monitoringCRDs = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: servicemonitors, singular: servicemonitor, kind: ServiceMonitor}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: prometheusrules, singular: prometheusrule, kind: PrometheusRule}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`

func TestManifestsApplyWithServerDryRun(t *testing.T) {
	if fleet == nil {
		t.Skip("needs the real fleet (not started with -short)")
	}
	kubectl(t, monitoringCRDs, "apply", "-f", "-")
	kubectl(t, "", "wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
	// A dry run creates nothing, so namespaced objects need their namespace to exist.
	for _, ns := range []string{"fleetcache", "fleetcache-sidecar-example", "fleetcache-member"} {
		kubectl(t, "", "create", "namespace", ns)
	}
	// Likewise a Pod's service account (no controller-manager makes one either).
	kubectl(t, "", "-n", "fleetcache-sidecar-example", "create", "serviceaccount", "inventory-app")
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			out := kubectl(t, "", "apply", "--dry-run=server", "-k", dir)
			if !strings.Contains(out, "(server dry run)") {
				t.Errorf("unexpected output:\n%s", out)
			}
			t.Log(out)
		})
	}
}

// TestClusterRolesGrantOnlyReadsOfTheDefaultResources compares the rendered ClusterRoles
// with the resources fleetcache caches by default.
func TestClusterRolesGrantOnlyReadsOfTheDefaultResources(t *testing.T) {
	var want []string
	for _, r := range clusters.DefaultResources() {
		want = append(want, r.Name)
	}
	sort.Strings(want)
	for _, dir := range []string{"base", "member"} {
		var roles int
		for _, o := range render(t, dir) {
			if o["kind"] != "ClusterRole" {
				continue
			}
			roles++
			var got []string
			for _, r := range o["rules"].([]any) {
				rule := r.(map[string]any)
				if verbs := fmt.Sprint(rule["verbs"]); verbs != "[get list watch]" {
					t.Errorf("%s: verbs %s, want exactly get, list, watch", dir, verbs)
				}
				if rule["nonResourceURLs"] != nil {
					t.Errorf("%s: grants non-resource URLs", dir)
				}
				for _, g := range rule["apiGroups"].([]any) {
					for _, res := range rule["resources"].([]any) {
						name := res.(string)
						if g != "" {
							name += "." + g.(string)
						}
						got = append(got, name)
					}
				}
			}
			sort.Strings(got)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s ClusterRole covers\n %v\nwant the default resources\n %v", dir, got, want)
			}
		}
		if roles != 1 {
			t.Errorf("%s: %d ClusterRoles, want 1", dir, roles)
		}
	}
}

func TestPodsAreHardened(t *testing.T) {
	for _, dir := range []string{"base", "overlays/sidecar", "overlays/sharded"} {
		for _, o := range render(t, dir) {
			var spec map[string]any
			switch o["kind"] {
			case "Deployment", "StatefulSet":
				spec = o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			case "Pod":
				spec = o["spec"].(map[string]any)
			default:
				continue
			}
			if sc := spec["securityContext"].(map[string]any); sc["runAsNonRoot"] != true {
				t.Errorf("%s: pod may run as root", dir)
			}
			var containers []any
			for _, k := range []string{"containers", "initContainers"} {
				if cs, ok := spec[k].([]any); ok {
					containers = append(containers, cs...)
				}
			}
			for _, c := range containers {
				c := c.(map[string]any)
				sc, _ := c["securityContext"].(map[string]any)
				caps, _ := sc["capabilities"].(map[string]any)
				if sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false || fmt.Sprint(caps["drop"]) != "[ALL]" {
					t.Errorf("%s/%s: securityContext %v", dir, c["name"], sc)
				}
				if c["name"] == "fleetcache" {
					if !strings.Contains(fmt.Sprint(c["env"]), "GOMEMLIMIT") {
						t.Errorf("%s: fleetcache container without GOMEMLIMIT", dir)
					}
					res := c["resources"].(map[string]any)
					if res["limits"] == nil || res["requests"] == nil {
						t.Errorf("%s: fleetcache container without requests and limits", dir)
					}
				}
			}
		}
	}
}

// TestAlertRulesPassPromtool extracts the PrometheusRule's groups and checks them.
func TestAlertRulesPassPromtool(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("FLEETCACHE_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool not found (install Debian's prometheus package)")
		}
		t.Skip("promtool not installed")
	}
	raw, err := os.ReadFile("monitoring/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		Spec map[string]any `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &pr); err != nil {
		t.Fatal(err)
	}
	rules, _ := yaml.Marshal(pr.Spec)
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, rules, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "rules", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}

// TestShardedRoleReachesOnlyTheGroupKeySecret: the sharded replicas may read the one
// Secret holding their group key (and create it), never read or list any other Secret.
func TestShardedRoleReachesOnlyTheGroupKeySecret(t *testing.T) {
	var secretRules []string
	for _, o := range render(t, "overlays/sharded") {
		if o["kind"] != "Role" && o["kind"] != "ClusterRole" {
			continue
		}
		for _, r := range o["rules"].([]any) {
			rule := r.(map[string]any)
			if !strings.Contains(fmt.Sprint(rule["resources"]), "secrets") {
				continue
			}
			secretRules = append(secretRules, fmt.Sprintf("%s %s: %v %v names %v", o["kind"], o["metadata"].(map[string]any)["name"], rule["resources"], rule["verbs"], rule["resourceNames"]))
		}
	}
	sort.Strings(secretRules)
	want := "[Role fleetcache-sharding: [secrets] [create] names <nil> Role fleetcache-sharding: [secrets] [get] names [fleetcache-group-key]]"
	if got := fmt.Sprint(secretRules); got != want {
		t.Errorf("rules on Secrets in overlays/sharded:\n %s\nwant\n %s", got, want)
	}
}
