package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

type objectsPage struct {
	Clusters []struct {
		Cluster, Phase string
	} `json:"clusters"`
	Partial bool `json:"partial"`
	Items   []struct {
		Cluster string `json:"cluster"`
		Object  struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		} `json:"object"`
	} `json:"items"`
	Continue string `json:"continue"`
}

// apiSet follows /api/v1/objects page by page and returns "cluster/namespace/name" for
// each item, in the order served.
func apiSet(t testing.TB, d *daemon, q url.Values) []string {
	t.Helper()
	var out []string
	for {
		var page objectsPage
		if code := d.getJSON(t, "/api/v1/objects", q, &page); code != http.StatusOK {
			t.Fatalf("objects?%s: status %d", q.Encode(), code)
		}
		for _, it := range page.Items {
			out = append(out, it.Cluster+"/"+it.Object.Metadata.Namespace+"/"+it.Object.Metadata.Name)
		}
		if page.Continue == "" {
			return out
		}
		q.Set("continue", page.Continue)
	}
}

func TestObjectsMatchKubectl(t *testing.T) {
	d := startDaemon(t)
	node := fleet.Clusters[0].Name + "-node-0"
	type variant struct {
		name      string
		api       url.Values
		cli       []string
		kubectl   []string
		onlyPods  bool
		skipOnCRD bool
	}
	variants := []variant{
		{name: "all", kubectl: []string{"-A"}},
		{name: "one namespace", api: url.Values{"namespace": {"payments"}}, cli: []string{"-n", "payments"}, kubectl: []string{"-n", "payments"}},
		{name: "label =", api: url.Values{"labelSelector": {"app=api"}}, cli: []string{"-l", "app=api"}, kubectl: []string{"-A", "-l", "app=api"}, skipOnCRD: true},
		{name: "label !=", api: url.Values{"labelSelector": {"app!=api"}}, cli: []string{"-l", "app!=api"}, kubectl: []string{"-A", "-l", "app!=api"}},
		{name: "label in", api: url.Values{"labelSelector": {"app in (api,web)"}}, cli: []string{"-l", "app in (api,web)"}, kubectl: []string{"-A", "-l", "app in (api,web)"}, skipOnCRD: true},
		{name: "label notin", api: url.Values{"labelSelector": {"app notin (web)"}}, cli: []string{"-l", "app notin (web)"}, kubectl: []string{"-A", "-l", "app notin (web)"}},
		{name: "label exists", api: url.Values{"labelSelector": {"fleetcache.io/seed"}}, cli: []string{"-l", "fleetcache.io/seed"}, kubectl: []string{"-A", "-l", "fleetcache.io/seed"}},
		{name: "label does not exist", api: url.Values{"labelSelector": {"!app"}}, cli: []string{"-l", "!app"}, kubectl: []string{"-A", "-l", "!app"}},
		{name: "field status.phase", api: url.Values{"fieldSelector": {"status.phase=Running"}}, cli: []string{"--field-selector", "status.phase=Running"}, kubectl: []string{"-A", "--field-selector", "status.phase=Running"}, onlyPods: true},
		{name: "field status.phase!=", api: url.Values{"fieldSelector": {"status.phase!=Running"}}, cli: []string{"--field-selector", "status.phase!=Running"}, kubectl: []string{"-A", "--field-selector", "status.phase!=Running"}, onlyPods: true},
		{name: "field spec.nodeName", api: url.Values{"fieldSelector": {"spec.nodeName=" + node}}, cli: []string{"--field-selector", "spec.nodeName=" + node}, kubectl: []string{"-A", "--field-selector", "spec.nodeName=" + node}, onlyPods: true},
	}
	for _, resource := range []string{"pods", "deployments.apps", "widgets.example.com"} {
		for _, v := range variants {
			if v.onlyPods && resource != "pods" || v.skipOnCRD && resource == "widgets.example.com" {
				continue
			}
			t.Run(resource+"/"+v.name, func(t *testing.T) {
				want := kubectlSet(t, resource, v.kubectl...)
				if len(want) == 0 && v.name == "all" {
					t.Fatalf("kubectl found no %s at all; the seed should have made some", resource)
				}
				q := url.Values{"resource": {resource}, "limit": {"7"}}
				for k, vals := range v.api {
					q[k] = vals
				}
				got := apiSet(t, d, q)
				if !sort.StringsAreSorted(got) {
					t.Errorf("API order is not cluster/namespace/name: %v", got)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("API:\n got  %v\n want %v", got, want)
				}
				cliOut := d.cli(t, append([]string{"get", resource, "-o", "json", "--chunk-size", "7"}, v.cli...)...)
				var list struct {
					Items []metav1.PartialObjectMetadata `json:"items"`
				}
				if err := json.Unmarshal([]byte(cliOut), &list); err != nil {
					t.Fatal(err)
				}
				var cli []string
				for _, it := range list.Items {
					cli = append(cli, it.Annotations["fleetcache.io/cluster"]+"/"+it.Namespace+"/"+it.Name)
				}
				sort.Strings(cli)
				if fmt.Sprint(cli) != fmt.Sprint(want) {
					t.Errorf("CLI:\n got  %v\n want %v", cli, want)
				}
			})
		}
	}
}

// TestPagingWhileObjectsChange pages through pods 7 at a time while pods are created and
// deleted in every cluster: each pod that exists throughout is returned exactly once.
func TestPagingWhileObjectsChange(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var churned atomic.Int64
	for _, c := range fleet.Clusters {
		cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				// Names sort before, among and after the seeded pods.
				name := fmt.Sprintf("%s-churn-%d", []string{"a", "m", "z"}[i%3], i)
				pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "payments"},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
				if _, err := cs.CoreV1().Pods("payments").Create(ctx, pod, metav1.CreateOptions{}); err == nil {
					churned.Add(1)
				}
				if i%2 == 1 {
					_ = cs.CoreV1().Pods("payments").Delete(ctx, fmt.Sprintf("%s-churn-%d", []string{"a", "m", "z"}[(i-1)%3], i-1), metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
				}
			}
		})
	}
	defer func() {
		cancel()
		wg.Wait()
		for _, c := range fleet.Clusters {
			cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
			pods, _ := cs.CoreV1().Pods("payments").List(context.Background(), metav1.ListOptions{})
			for _, p := range pods.Items {
				if strings.Contains(p.Name, "-churn-") {
					_ = cs.CoreV1().Pods("payments").Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
				}
			}
		}
	}()
	stable := kubectlSet(t, "pods", "-A", "-l", "fleetcache.io/seed")
	got := apiSet(t, d, url.Values{"resource": {"pods"}, "limit": {"7"}})
	if churned.Load() == 0 {
		t.Fatal("no churn happened during paging; the test proves nothing")
	}
	seen := map[string]int{}
	for _, k := range got {
		seen[k]++
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("%s returned %d times", k, n)
		}
	}
	for _, k := range stable {
		if seen[k] != 1 {
			t.Errorf("%s existed throughout but was returned %d times", k, seen[k])
		}
	}
	t.Logf("paged %d pods while %d were created", len(got), churned.Load())
}

func TestCountMatchesKubectl(t *testing.T) {
	d := startDaemon(t)
	var res struct {
		Groups []struct {
			Values []string `json:"values"`
			Count  int      `json:"count"`
		} `json:"groups"`
		Total int `json:"total"`
	}
	if code := d.getJSON(t, "/api/v1/count", url.Values{"resource": {"pods"}, "groupBy": {"cluster,namespace"}, "labelSelector": {"fleetcache.io/seed"}}, &res); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	want := map[string]int{}
	for _, k := range kubectlSet(t, "pods", "-A", "-l", "fleetcache.io/seed") {
		parts := strings.SplitN(k, "/", 3)
		want[parts[0]+"/"+parts[1]]++
	}
	got := map[string]int{}
	total := 0
	for _, g := range res.Groups {
		got[g.Values[0]+"/"+g.Values[1]] = g.Count
		total += g.Count
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || total != res.Total {
		t.Errorf("counts:\n got  %v (total %d)\n want %v", got, res.Total, want)
	}
	out := d.cli(t, "count", "pods", "--by", "cluster,namespace", "-l", "fleetcache.io/seed")
	for key, n := range want {
		parts := strings.SplitN(key, "/", 2)
		if !strings.Contains(out, parts[0]) || !containsRow(out, parts[0], parts[1], fmt.Sprint(n)) {
			t.Errorf("CLI count lacks row %s %s %d:\n%s", parts[0], parts[1], n, out)
		}
	}
}

func containsRow(out string, cells ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if fmt.Sprint(strings.Fields(line)) == fmt.Sprint(cells) {
			return true
		}
	}
	return false
}

type watchLine struct {
	Type            string `json:"type"`
	Cluster         string `json:"cluster"`
	Cursor          string `json:"cursor"`
	ResourceVersion string `json:"resourceVersion"`
	Object          struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Data     map[string]string `json:"data"`
	} `json:"object"`
	Error *struct{ Code int } `json:"error"`
}

// openWatch streams /api/v1/watch lines into a channel.
func openWatch(t testing.TB, d *daemon, q url.Values) (<-chan watchLine, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/api/v1/watch?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %s", resp.Status)
	}
	ch := make(chan watchLine, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var l watchLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				ch <- l
			}
		}
	}()
	return ch, cancel
}

// next returns the next non-bookmark line, failing after a generous bound.
func next(t *testing.T, ch <-chan watchLine) watchLine {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatal("watch stream ended")
			}
			if l.Type != "BOOKMARK" {
				return l
			}
		case <-timeout:
			t.Fatal("no watch event within 15s")
		}
	}
}

func TestWatchEventsAndResume(t *testing.T) {
	d := startDaemon(t)
	b := fleet.Clusters[1]
	cs := kubernetes.NewForConfigOrDie(b.AdminConfig())
	ctx := context.Background()
	q := url.Values{"resource": {"configmaps"}, "labelSelector": {"e2e=watch"}}
	ch, stop := openWatch(t, d, q)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "watched", Namespace: "default", Labels: map[string]string{"e2e": "watch"}}, Data: map[string]string{"v": "1"}}

	start := time.Now()
	created, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	added := next(t, ch)
	latency := time.Since(start)
	if added.Type != "ADDED" || added.Cluster != b.Name || added.Object.Metadata.Name != "watched" {
		t.Fatalf("first event: %+v", added)
	}
	t.Logf("ADDED seen %s after the create returned... (create to event)", latency)
	created.Data["v"] = "2"
	if _, err := cs.CoreV1().ConfigMaps("default").Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if l := next(t, ch); l.Type != "MODIFIED" || l.Cluster != b.Name || l.Object.Data["v"] != "2" {
		t.Fatalf("second event: %+v", l)
	}
	stop()

	// Disconnected: a change and the deletion happen; resuming from the ADDED event's
	// cursor must deliver the MODIFIED already seen, the new one and the DELETED.
	created.Data["v"] = "3"
	created.ResourceVersion = ""
	if _, err := cs.CoreV1().ConfigMaps("default").Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().ConfigMaps("default").Delete(ctx, "watched", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	q.Set("cursor", added.Cursor)
	ch2, stop2 := openWatch(t, d, q)
	defer stop2()
	var got []string
	for range 3 {
		l := next(t, ch2)
		got = append(got, fmt.Sprintf("%s %s v=%s", l.Type, l.Cluster, l.Object.Data["v"]))
	}
	want := []string{"MODIFIED " + b.Name + " v=2", "MODIFIED " + b.Name + " v=3", "DELETED " + b.Name + " v=3"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("resumed:\n got  %v\n want %v", got, want)
	}
}

func TestBadInputGetsClearErrors(t *testing.T) {
	d := startDaemon(t)
	var page objectsPage
	d.getJSON(t, "/api/v1/objects", url.Values{"resource": {"pods"}, "limit": {"2"}}, &page)
	if page.Continue == "" {
		t.Fatal("no continue token for a 2-item page")
	}
	forged := []byte(page.Continue)
	forged[5] ^= 1
	cases := []struct {
		name  string
		path  string
		q     url.Values
		code  int
		words []string
	}{
		{"malformed label selector", "/api/v1/objects", url.Values{"resource": {"pods"}, "labelSelector": {"app in (a"}}, 400, []string{"labelSelector"}},
		{"malformed field selector", "/api/v1/objects", url.Values{"resource": {"pods"}, "fieldSelector": {"status.phase"}}, 400, []string{"fieldSelector"}},
		{"missing resource", "/api/v1/objects", url.Values{}, 400, []string{"resource", "required"}},
		{"unknown resource", "/api/v1/objects", url.Values{"resource": {"gizmos"}}, 404, []string{"gizmos"}},
		{"unknown cluster", "/api/v1/objects", url.Values{"resource": {"pods"}, "cluster": {"nowhere"}}, 404, []string{"nowhere"}},
		{"bad cluster glob", "/api/v1/objects", url.Values{"resource": {"pods"}, "cluster": {"[a"}}, 400, []string{"cluster"}},
		{"limit not a number", "/api/v1/objects", url.Values{"resource": {"pods"}, "limit": {"ten"}}, 400, []string{"limit", "ten"}},
		{"limit too large", "/api/v1/objects", url.Values{"resource": {"pods"}, "limit": {"999999"}}, 400, []string{"limit", "999999"}},
		{"unknown parameter", "/api/v1/objects", url.Values{"resource": {"pods"}, "labelselector": {"a"}}, 400, []string{"labelselector"}},
		{"forged continue", "/api/v1/objects", url.Values{"resource": {"pods"}, "limit": {"2"}, "continue": {string(forged)}}, 400, []string{"continue", "token"}},
		{"continue of another query", "/api/v1/objects", url.Values{"resource": {"pods"}, "namespace": {"search"}, "continue": {page.Continue}}, 400, []string{"different query"}},
		{"bad groupBy", "/api/v1/count", url.Values{"resource": {"pods"}, "groupBy": {"colour"}}, 400, []string{"groupBy", "colour"}},
		{"bad cursor", "/api/v1/watch", url.Values{"resource": {"pods"}, "cursor": {"!!"}}, 400, []string{"cursor"}},
		{"watch of a cluster not in the configuration", "/api/v1/watch", url.Values{"resource": {"pods"}, "only": {"nowhere"}}, 400, []string{"only", "nowhere"}},
		{"watch of a known and an unknown cluster", "/api/v1/watch", url.Values{"resource": {"pods"}, "only": {fleet.Clusters[0].Name + ",nowhere"}}, 400, []string{"only", "nowhere"}},
		{"unknown object", "/api/v1/objects/" + fleet.Clusters[0].Name + "/pods/default/nope", nil, 404, []string{"nope"}},
		{"object in unknown cluster", "/api/v1/objects/nowhere/pods/default/nope", nil, 404, []string{"nowhere"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e struct {
				Code    int    `json:"code"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			}
			code := d.getJSON(t, tc.path, tc.q, &e)
			if code != tc.code || e.Code != tc.code {
				t.Errorf("status %d (body code %d), want %d: %s", code, e.Code, tc.code, e.Message)
			}
			for _, w := range tc.words {
				if !strings.Contains(e.Message, w) {
					t.Errorf("message %q does not name %q", e.Message, w)
				}
			}
		})
	}
	t.Run("stale continue", func(t *testing.T) {
		time.Sleep(continueTTL + time.Second)
		var e struct{ Code int }
		if code := d.getJSON(t, "/api/v1/objects", url.Values{"resource": {"pods"}, "limit": {"2"}, "continue": {page.Continue}}, &e); code != http.StatusGone {
			t.Errorf("stale token: status %d, want 410", code)
		}
	})
}

func TestGetOneObjectAndClusterScoped(t *testing.T) {
	d := startDaemon(t)
	a := fleet.Clusters[0]
	var item struct {
		Cluster string `json:"cluster"`
		Object  struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
		} `json:"object"`
	}
	node := a.Name + "-node-1"
	if code := d.getJSON(t, "/api/v1/objects/"+a.Name+"/nodes/_/"+node, nil, &item); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if item.Cluster != a.Name || item.Object.Kind != "Node" || item.Object.Metadata.Name != node {
		t.Errorf("got %+v", item)
	}
	// Secrets are refused unless the daemon is told to serve them (TestSecretsServedWithoutValues).
	var e struct{ Code int }
	if code := d.getJSON(t, "/api/v1/objects/"+a.Name+"/secrets/payments/payments-db-credentials", nil, &e); code != http.StatusForbidden {
		t.Errorf("secret by default: %d, want 403", code)
	}
}
