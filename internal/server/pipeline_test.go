package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fleetcache/fleetcache/internal/kubeapi"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// pipelineServer serves n small pods in 10 clusters through both APIs.
func pipelineServer(t *testing.T, n int, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	ix := servingIndex(t, n, false)
	opts.Fleet, opts.Index = newSyncedFleet(), ix
	opts.KubeAPI = &kubeapi.Handler{Index: ix, Fleet: newSyncedFleet()}
	s := New(opts)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

// The response cap holds on both faces and every encoding: a list larger than
// MaxResponseBytes comes in several answers, continued by their tokens, every pod
// exactly once.
func TestResponseCapOnBothFaces(t *testing.T) {
	const n = 2000 // about 1 MB of JSON
	_, srv := pipelineServer(t, n, Options{MaxResponseBytes: 128 << 10})
	cfg := &rest.Config{Host: srv.URL + "/fleet"}
	typed := rest.CopyConfig(cfg)
	typed.ContentType = runtime.ContentTypeProtobuf
	typed.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	cs := kubernetes.NewForConfigOrDie(typed)
	dyn := dynamic.NewForConfigOrDie(cfg)
	pods := schema.GroupVersionResource{Version: "v1", Resource: "pods"}

	// Each face lists one page from a continue token and returns its names and the next
	// token.
	faces := map[string]func(cont string) ([]string, string){
		"/api/v1/objects": func(cont string) ([]string, string) {
			var page struct {
				Items []struct {
					Cluster string
					Object  metav1.PartialObjectMetadata
				}
				Continue string
			}
			getJSON(t, srv.URL+"/api/v1/objects?"+url.Values{"resource": {"pods"}, "limit": {"5000"}, "continue": {cont}}.Encode(), "", &page)
			var out []string
			for _, it := range page.Items {
				out = append(out, it.Cluster+"/"+it.Object.Name)
			}
			return out, page.Continue
		},
		"/api/v1/objects?format=table": func(cont string) ([]string, string) {
			var page struct {
				Table    metav1.Table
				Continue string
			}
			getJSON(t, srv.URL+"/api/v1/objects?"+url.Values{"resource": {"pods"}, "limit": {"5000"}, "format": {"table"}, "continue": {cont}}.Encode(), "", &page)
			return tableNames(page.Table), page.Continue
		},
		"kube JSON (dynamic client, as kubectl -o json)": func(cont string) ([]string, string) {
			l, err := dyn.Resource(pods).List(context.Background(), metav1.ListOptions{Limit: 500, Continue: cont})
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, it := range l.Items {
				out = append(out, it.GetAnnotations()[kubeapi.ClusterAnnotation]+"/"+it.GetName())
			}
			return out, l.GetContinue()
		},
		"kube Table": func(cont string) ([]string, string) {
			var tbl metav1.Table
			getJSON(t, srv.URL+"/fleet/api/v1/pods?"+url.Values{"limit": {"500"}, "continue": {cont}}.Encode(), tableAccept, &tbl)
			return tableNames(tbl), tbl.Continue
		},
		"kube protobuf (typed client)": func(cont string) ([]string, string) {
			l, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{Limit: 5000, Continue: cont})
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, p := range l.Items {
				out = append(out, p.Annotations[kubeapi.ClusterAnnotation]+"/"+p.Name)
			}
			return out, l.Continue
		},
	}
	for name, page := range faces {
		seen := map[string]int{}
		pages, cont := 0, ""
		for {
			names, next := page(cont)
			for _, n := range names {
				seen[n]++
			}
			pages++
			if next == "" {
				break
			}
			cont = next
		}
		if len(seen) != n || pages < 2 {
			t.Errorf("%s: %d distinct pods in %d answers; want %d in several (the cap is 128 KiB)", name, len(seen), pages, n)
		}
		for p, k := range seen {
			if k != 1 {
				t.Errorf("%s: %s listed %d times", name, p, k)
			}
		}
	}
}

// Below the cap, a Kubernetes API list in JSON is one answer whatever its limit (kubectl
// asks for 500); protobuf keeps its pages.
func TestKubeJSONListsAreWhole(t *testing.T) {
	const n = 2000
	_, srv := pipelineServer(t, n, Options{})
	l, err := dynamic.NewForConfigOrDie(&rest.Config{Host: srv.URL + "/fleet"}).Resource(schema.GroupVersionResource{Version: "v1", Resource: "pods"}).
		List(context.Background(), metav1.ListOptions{Limit: 500})
	if err != nil || len(l.Items) != n || l.GetContinue() != "" {
		t.Fatalf("JSON list, limit 500: %d items, continue %q, %v; want all %d", len(l.Items), l.GetContinue(), err, n)
	}
	typed := &rest.Config{Host: srv.URL + "/fleet", ContentConfig: rest.ContentConfig{ContentType: runtime.ContentTypeProtobuf, AcceptContentTypes: runtime.ContentTypeProtobuf}}
	p, err := kubernetes.NewForConfigOrDie(typed).CoreV1().Pods("").List(context.Background(), metav1.ListOptions{Limit: 500})
	if err != nil || len(p.Items) != 500 || p.Continue == "" {
		t.Fatalf("protobuf list, limit 500: %d items, continue %q, %v; want a page of 500", len(p.Items), p.Continue, err)
	}
}

// EndStreams ends the watch streams of both faces cleanly: the chunked responses end
// (no error reading them to the end), a client-go watch's channel closes without an
// ERROR event.
func TestEndStreamsEndsBothFaces(t *testing.T) {
	s, srv := pipelineServer(t, 20, Options{})
	var raws []chan error
	for _, path := range []string{"/api/v1/watch?resource=pods", "/fleet/api/v1/pods?watch=1", "/clusters/cluster-03/api/v1/namespaces/ns-03/pods/pod-0000003?watch=true"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v", path, err, resp)
		}
		done := make(chan error, 1)
		go func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<24)
			for sc.Scan() {
			}
			done <- sc.Err()
		}()
		raws = append(raws, done)
	}
	w, err := kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL + "/fleet"}).CoreV1().Pods("").Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	initial := 0
	for initial < 20 { // the initial ADDED events: the stream is running
		ev := <-w.ResultChan()
		if ev.Type != "ADDED" {
			t.Fatalf("initial event %s", ev.Type)
		}
		initial++
	}
	s.EndStreams()
	for i, done := range raws {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("stream %d did not end cleanly: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("stream %d still open 30s after EndStreams", i)
		}
	}
	testfleet.Eventually(t, 30*time.Second, "client-go watch closed", func() (bool, string) {
		select {
		case ev, ok := <-w.ResultChan():
			if ok {
				t.Errorf("client-go watch: %s event after EndStreams", ev.Type)
			}
			return !ok, "open"
		default:
			return false, "open"
		}
	})
	// New streams end at once.
	resp, err := http.Get(srv.URL + "/fleet/api/v1/pods?watch=1&resourceVersion=0")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("a watch after EndStreams: %v %d %s", err, resp.StatusCode, body)
	}
}

// Every route of both faces, and /healthz, /readyz, /metrics and unknown /api/ paths,
// is counted in fleetcache_http_requests_total under its handler; watch streams under
// <handler>-watch.
func TestEveryRouteIsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, srv := pipelineServer(t, 20, Options{Registerer: reg, Gatherer: reg})
	get := func(path string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	routes := map[string]string{
		"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics",
		"/api/v1/clusters": "clusters", "/api/v1/resources": "resources", "/api/v1/objects?resource=pods": "objects",
		"/api/v1/objects/cluster-03/pods/ns-03/pod-0000003": "object", "/api/v1/count?resource=pods": "count",
		"/api/v1/nothing":    "not-found",
		"/fleet/api/v1/pods": "kubeapi-fleet", "/fleet/api": "kubeapi-fleet", "/clusters/cluster-03/api/v1/pods": "kubeapi-cluster",
		"/fleet/api/v1/pods?watch=1&timeoutSeconds=1": "kubeapi-fleet-watch",
		"/api/v1/watch?resource=pods&cursor=x":        "watch", // refused: still counted
	}
	for path := range routes {
		get(path)
	}
	count := func(handler string) float64 {
		total := 0.0
		for _, code := range []string{"200", "400", "404"} {
			total += testutil.ToFloat64(mustCounter(t, reg, handler, code))
		}
		return total
	}
	for path, handler := range routes {
		if got := count(handler); got < 1 {
			t.Errorf("%s: handler %q counted %v times", path, handler, got)
		}
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, handler, code string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() != "fleetcache_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["handler"] == handler && labels["code"] == code && labels["method"] == "get" {
				c.Add(m.GetCounter().GetValue())
			}
		}
	}
	return c
}

func getJSON(t *testing.T, u, accept string, into any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", u, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("%s: %v", u, err)
	}
}

// tableNames are a Table's rows as cluster/name (its first two cells).
func tableNames(tbl metav1.Table) []string {
	var out []string
	for _, r := range tbl.Rows {
		out = append(out, strings.Join([]string{r.Cells[0].(string), r.Cells[1].(string)}, "/"))
	}
	return out
}

// /api/v1/clusters is compact JSON (13,000 resource statuses at 1,000 clusters), indented
// with ?pretty, as kubectl's --raw users and curl users ask for it.
func TestClustersIsCompactUnlessPretty(t *testing.T) {
	_, srv := pipelineServer(t, 10, Options{})
	get := func(q string) string {
		resp, err := http.Get(srv.URL + "/api/v1/clusters" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !json.Valid(b) {
			t.Fatalf("%s: HTTP %d %s", q, resp.StatusCode, b)
		}
		return string(b)
	}
	for q, indented := range map[string]bool{"": false, "?pretty": true, "?pretty=true": true, "?pretty=false": false} {
		body := get(q)
		if got := strings.Contains(body, "\n  "); got != indented || !strings.Contains(body, `"clusters"`) {
			t.Errorf("%q: indented %v, want %v: %.200s", q, got, indented, body)
		}
	}
}
