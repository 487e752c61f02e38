package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// TestListsWithoutALimitAreNeverCut: with a response cap far below the fleet's pods
// (api.maxResponseBytes: 64Ki), a Kubernetes API list that asks for a page is cut with a
// continue token, and one asked without a limit is everything in one answer, as
// kube-apiserver answers it: kubectl --sort-by (which sorts one answer) prints every pod
// in order, and a client-go List without a limit (protobuf preferred) gets every pod and
// no continue token. The same through one daemon and through a sharded replica.
func TestListsWithoutALimitAreNeverCut(t *testing.T) {
	sf := newShardFleet(t, 3, "[{name: pods}]")
	sf.extra = "api: {maxResponseBytes: 64Ki}\n"
	contexts := []string{"ctx-0001", "ctx-0002", "ctx-0003"}
	var truth []string
	for i, out := range fanOutContexts(t, sf.kubeconfig, contexts, "get", "pods", "-A", "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}`) {
		for _, l := range strings.Fields(out) {
			truth = append(truth, contexts[i]+"/"+l)
		}
	}
	sort.Strings(truth)
	single := sf.start(t, "", 0)
	sharded := []shardReplica{sf.start(t, "cap", 1), sf.start(t, "cap", 1)}
	for _, r := range []shardReplica{single, sharded[0]} {
		t.Run(r.id, func(t *testing.T) {
			k := newFleetKubectl(t, &daemon{url: r.url, bin: sf.bin})
			testfleet.Eventually(t, 60*time.Second, "every pod cached", func() (bool, string) {
				out, _, _ := k.run("get", "pods", "-A", "-o", clusterNsName)
				got := sorted(out)
				return slices.Equal(got, truth), fmt.Sprintf("%d of %d pods", len(got), len(truth))
			})
			// The cap is in force: a page of 500 is cut far before 500 pods.
			var page struct {
				Items    []json.RawMessage `json:"items"`
				Metadata metav1.ListMeta   `json:"metadata"`
			}
			getJSON := func(path string) {
				t.Helper()
				resp, err := http.Get(r.url + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				page.Items, page.Metadata = nil, metav1.ListMeta{}
				if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: HTTP %d, %v", path, resp.StatusCode, err)
				}
			}
			getJSON("/fleet/api/v1/pods?limit=500")
			if page.Metadata.Continue == "" || len(page.Items) >= len(truth) {
				t.Fatalf("limit=500 under a 64Ki cap: %d items, continue %q; want a cut list", len(page.Items), page.Metadata.Continue)
			}
			getJSON("/fleet/api/v1/pods")
			if page.Metadata.Continue != "" || len(page.Items) != len(truth) {
				t.Errorf("no limit: %d items, continue %q; want all %d in one answer", len(page.Items), page.Metadata.Continue, len(truth))
			}
			// kubectl --sort-by asks for everything at once and sorts that one answer.
			out, stderr, err := k.run("get", "pods", "-A", "--sort-by=.metadata.name", "--no-headers")
			if err != nil {
				t.Fatalf("kubectl --sort-by: %v\n%s", err, stderr)
			}
			var names []string
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if f := strings.Fields(line); len(f) > 2 {
					names = append(names, f[2]) // NAMESPACE CLUSTER NAME ...
				}
			}
			if len(names) != len(truth) || !sort.StringsAreSorted(names) {
				t.Errorf("kubectl --sort-by=.metadata.name: %d rows, sorted %v; want %d sorted rows", len(names), sort.StringsAreSorted(names), len(truth))
			}
			// client-go's typed List without a limit, preferring protobuf.
			cfg := &rest.Config{Host: r.url + "/fleet", ContentConfig: rest.ContentConfig{
				ContentType: "application/vnd.kubernetes.protobuf", AcceptContentTypes: "application/vnd.kubernetes.protobuf,application/json"}}
			list, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if list.Continue != "" || len(list.Items) != len(truth) {
				t.Errorf("client-go List without a limit: %d pods, continue %q; want all %d", len(list.Items), list.Continue, len(truth))
			}
		})
	}
}
