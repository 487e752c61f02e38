package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// TestKubeAPIResourceVersionSemantics checks list and watch resourceVersion handling
// through a real client-go clientset and raw requests.
func TestKubeAPIResourceVersionSemantics(t *testing.T) {
	d := startDaemon(t)
	cs := kubernetes.NewForConfigOrDie(fleetConfig(t, d.bin, d.url, "fleet"))
	ctx := context.Background()
	pods := cs.CoreV1().Pods("")

	all, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv := all.ResourceVersion
	if !regexp.MustCompile(`^[0-9a-f]{12}\.[A-Za-z0-9_-]+$`).MatchString(rv) {
		t.Fatalf("list resourceVersion %q: want <epoch>.<cursor>", rv)
	}
	if want := len(kubectlSet(t, "pods", "-A")); len(all.Items) != want {
		t.Fatalf("list: %d pods, kubectl %d", len(all.Items), want)
	}

	// "0" is served whole, as kube-apiserver's watch cache does, whatever the limit.
	zero, err := pods.List(ctx, metav1.ListOptions{ResourceVersion: "0", Limit: 2})
	if err != nil || len(zero.Items) != len(all.Items) || zero.Continue != "" {
		t.Errorf(`resourceVersion "0", limit 2: %d items, continue %q, %v; want all %d`, len(zero.Items), zero.Continue, err, len(all.Items))
	}
	// Every page of a paged list reports the first page's resourceVersion.
	page1, err := pods.List(ctx, metav1.ListOptions{Limit: 2})
	if err != nil || page1.Continue == "" {
		t.Fatalf("page 1: %v, continue %q", err, page1.Continue)
	}
	page2, err := pods.List(ctx, metav1.ListOptions{Limit: 2, Continue: page1.Continue})
	if err != nil || page2.ResourceVersion != page1.ResourceVersion || len(page2.Items) != 2 || page2.Items[0].Name == page1.Items[0].Name {
		t.Errorf("page 2: rv %q (page 1 %q), %d items, %v", page2.ResourceVersion, page1.ResourceVersion, len(page2.Items), err)
	}
	// A resourceVersion this process issued: NotOlderThan serves the current state.
	if l, err := pods.List(ctx, metav1.ListOptions{ResourceVersion: rv, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan}); err != nil || len(l.Items) != len(all.Items) {
		t.Errorf("NotOlderThan %s: %v", rv, err)
	}
	// One from another process (the daemon restarted): 410 Expired, on a list as an
	// HTTP status, on a watch as the stream's ERROR event.
	foreign := "000000000000" + rv[12:]
	_, err = pods.List(ctx, metav1.ListOptions{ResourceVersion: foreign})
	if !apierrors.IsResourceExpired(err) || apierrors.ReasonForError(err) != metav1.StatusReasonExpired || err.(apierrors.APIStatus).Status().Code != http.StatusGone {
		t.Errorf("list from another process's resourceVersion: %v, want 410 Expired", err)
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: foreign})
	if err != nil {
		t.Fatalf("watch: %v, want the 410 as an event", err)
	}
	select {
	case ev := <-w.ResultChan():
		if err := apierrors.FromObject(ev.Object); ev.Type != "ERROR" || !apierrors.IsResourceExpired(err) || err.(apierrors.APIStatus).Status().Code != http.StatusGone {
			t.Errorf("watch from another process's resourceVersion: %s %v, want ERROR 410 Expired", ev.Type, err)
		}
	case <-time.After(10 * time.Second):
		t.Error("watch from another process's resourceVersion: no event")
	}
	w.Stop()
	if _, err := pods.List(ctx, metav1.ListOptions{ResourceVersion: "12345"}); !apierrors.IsBadRequest(err) {
		t.Errorf("list from a resourceVersion no fleetcache issued: %v, want 400", err)
	}
	// sendInitialEvents is validated as kube-apiserver does.
	_, err = pods.Watch(ctx, metav1.ListOptions{SendInitialEvents: ptr.To(true)})
	if !apierrors.IsInvalid(err) {
		t.Errorf("sendInitialEvents without resourceVersionMatch: %v, want 422 Invalid", err)
	}

	// The watch-list stream, raw: every pod of a namespace ADDED, then the bookmark
	// that ends the initial events, of kind Pod, carrying a resumable resourceVersion.
	want := len(kubectlSet(t, "pods", "-n", "payments"))
	events := rawWatch(t, d.url+"/fleet/api/v1/namespaces/payments/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", func(ev metav1.WatchEvent) bool {
		return ev.Type == "BOOKMARK"
	})
	added := 0
	for _, ev := range events[:len(events)-1] {
		if ev.Type != "ADDED" {
			t.Errorf("initial event %s, want ADDED", ev.Type)
		}
		added++
	}
	var bm metav1.PartialObjectMetadata
	if err := json.Unmarshal(events[len(events)-1].Object.Raw, &bm); err != nil {
		t.Fatal(err)
	}
	if added != want || bm.Kind != "Pod" || bm.APIVersion != "v1" || bm.Annotations[metav1.InitialEventsAnnotationKey] != "true" || !strings.Contains(bm.ResourceVersion, ".") {
		t.Errorf("watch-list: %d ADDED (kubectl %d), then %s %s rv %q annotations %v", added, want, bm.APIVersion, bm.Kind, bm.ResourceVersion, bm.Annotations)
	}

	// watch=1 on one object's path watches that object (it used to answer a get).
	name := all.Items[0].Name
	one := rawWatch(t, d.url+"/fleet/api/v1/namespaces/"+all.Items[0].Namespace+"/pods/"+name+"?watch=1", func(metav1.WatchEvent) bool { return true })
	var obj metav1.PartialObjectMetadata
	if err := json.Unmarshal(one[0].Object.Raw, &obj); err != nil || one[0].Type != "ADDED" || obj.Name != name {
		t.Errorf("watch=1 on pod %s: %s %s %v", name, one[0].Type, obj.Name, err)
	}
}

// rawWatch reads JSON watch events from url until last returns true (30 s at most).
func rawWatch(t *testing.T, url string, last func(metav1.WatchEvent) bool) []metav1.WatchEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	var out []metav1.WatchEvent
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var ev metav1.WatchEvent
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("%s: after %d events: %v", url, len(out), err)
		}
		out = append(out, ev)
		if last(ev) {
			return out
		}
	}
}

// cachedResources returns "group/version/resource" of what the daemon caches and serves.
func cachedResources(t *testing.T, d *daemon) []string {
	var res struct {
		Resources []struct {
			Name, Kind, APIVersion string
		} `json:"resources"`
	}
	d.getJSON(t, "/api/v1/resources", url.Values{}, &res)
	var out []string
	for _, r := range res.Resources {
		plural, _, _ := strings.Cut(r.Name, ".")
		gv := r.APIVersion
		if !strings.Contains(gv, "/") {
			gv = "/" + gv
		}
		out = append(out, gv+"/"+plural)
	}
	sort.Strings(out)
	return out
}

func aggregatedDiscovery(t *testing.T, base string) []string {
	t.Helper()
	var out []string
	for _, path := range []string{"/api", "/apis"} {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Accept", discovery.AcceptV2+","+discovery.AcceptV1)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var list apidiscoveryv2.APIGroupDiscoveryList
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || resp.Header.Get("Content-Type") != discovery.AcceptV2 || list.Kind != "APIGroupDiscoveryList" {
			t.Fatalf("%s%s: %v, Content-Type %q, kind %q", base, path, err, resp.Header.Get("Content-Type"), list.Kind)
		}
		for _, g := range list.Items {
			for _, v := range g.Versions {
				for _, r := range v.Resources {
					if r.ResponseKind == nil || r.ResponseKind.Kind == "" || fmt.Sprint(r.Verbs) != "[get list watch]" {
						t.Errorf("%s %s: kind %v verbs %v", path, r.Resource, r.ResponseKind, r.Verbs)
					}
					out = append(out, g.Name+"/"+v.Version+"/"+r.Resource)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestAggregatedDiscoveryListsExactlyTheCachedResources probes aggregated discovery
// (what client-go and kubectl ask for first) on /fleet and each cluster, and kubectl
// api-resources through it: exactly the cached resources, per cluster only those it
// serves; a resource not cached is 404 like one an apiserver does not serve.
func TestAggregatedDiscoveryListsExactlyTheCachedResources(t *testing.T) {
	d := startDaemon(t)
	want := cachedResources(t, d)
	if got := aggregatedDiscovery(t, d.url+"/fleet"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("/fleet aggregated discovery:\n got  %v\n want %v", got, want)
	}
	for _, c := range fleet.Clusters {
		var wantC []string
		for _, r := range want {
			if r != "example.com/v1/widgets" || testfleet.HasWidgets(c.Index) {
				wantC = append(wantC, r)
			}
		}
		if got := aggregatedDiscovery(t, d.url+"/clusters/"+c.Name); fmt.Sprint(got) != fmt.Sprint(wantC) {
			t.Errorf("/clusters/%s aggregated discovery:\n got  %v\n want %v", c.Name, got, wantC)
		}
	}

	k := newFleetKubectl(t, d)
	out, stderr, err := k.run("api-resources", "-o", "name", "-v=6")
	if err != nil {
		t.Fatalf("kubectl api-resources: %v\n%s", err, stderr)
	}
	var names, wantNames []string
	names = sorted(out)
	for _, r := range want {
		parts := strings.Split(r, "/")
		n := parts[2]
		if parts[0] != "" {
			n += "." + parts[0]
		}
		wantNames = append(wantNames, n)
	}
	sort.Strings(wantNames)
	if fmt.Sprint(names) != fmt.Sprint(wantNames) {
		t.Errorf("kubectl api-resources through fleetcache:\n got  %v\n want %v", names, wantNames)
	}
	// kubectl took everything from the two aggregated documents: no per-group requests.
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "GET ") && regexp.MustCompile(`/fleet/apis?/`).MatchString(line) {
			t.Errorf("kubectl fell back to legacy discovery: %s", line)
		}
	}
	if !strings.Contains(stderr, "/fleet/apis") {
		t.Errorf("kubectl -v=6 shows no discovery request:\n%s", stderr)
	}

	// Not cached: 404, as from an apiserver that does not serve it.
	if out, stderr, err := k.run("get", "--raw", "/api/v1/services"); err == nil || !strings.Contains(stderr, "NotFound") {
		t.Errorf("get --raw /api/v1/services: %v %s %s", err, out, stderr)
	}
	if _, stderr, err := k.run("get", "services", "-A"); err == nil || !strings.Contains(stderr, `doesn't have a resource type "services"`) {
		t.Errorf("kubectl get services: %v %s", err, stderr)
	}
	bravo := fleet.Clusters[1]
	if testfleet.HasWidgets(bravo.Index) {
		t.Fatal("the test fleet changed: bravo should lack widgets")
	}
	if _, stderr, err := k.run("--context", "fleet-"+bravo.Name, "get", "--raw", "/apis/example.com/v1/widgets"); err == nil || !strings.Contains(stderr, "NotFound") {
		t.Errorf("widgets on %s, which does not serve them: %v %s", bravo.Name, err, stderr)
	}
}

// TestREADMEClientGoExample checks that the README quotes examples/informer verbatim,
// and runs it against the daemon: its per-cluster pod counts are kubectl's.
func TestREADMEClientGoExample(t *testing.T) {
	d := startDaemon(t)
	src, err := os.ReadFile("../examples/informer/main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, code, _ := strings.Cut(string(src), "// example:start\n")
	code, _, _ = strings.Cut(code, "\n// example:end")
	if !strings.Contains(string(readme), "```go\n"+code+"```\n") {
		t.Errorf("README.md does not quote examples/informer/main.go's example; paste:\n%s", code)
	}
	if n := strings.Count(code, "\n"); n > 30 {
		t.Errorf("the example is %d lines; keep it short", n)
	}

	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(kubeconfig, []byte(d.cli(t, "kubeconfig")), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "informer")
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/informer").CombinedOutput(); err != nil {
		t.Fatalf("build the example: %v\n%s", err, out)
	}
	want := map[string]int{}
	for _, k := range kubectlSet(t, "pods", "-A") {
		c, _, _ := strings.Cut(k, "/")
		want[c]++
	}
	out, err := exec.Command(bin, kubeconfig).Output()
	if err != nil {
		t.Fatalf("the example: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != fmt.Sprint(want) {
		t.Errorf("the example printed %s, kubectl counts %v", got, want)
	}
}
