package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// fleetConfig returns the rest.Config of one context ("fleet", "fleet-<cluster>") of the
// kubeconfig `fleetcache kubeconfig` prints for the daemon at server.
func fleetConfig(t testing.TB, bin, server, kubeContext string) *rest.Config {
	t.Helper()
	out, err := exec.Command(bin, "kubeconfig", "--server", server).Output()
	if err != nil {
		t.Fatalf("fleetcache kubeconfig: %v", err)
	}
	kc, err := clientcmd.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.NewNonInteractiveClientConfig(*kc, kubeContext, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// requestLog records the requests a client sends (method, path and query) and the
// Accept header and status of each.
type requestLog struct {
	mu   sync.Mutex
	reqs []loggedRequest
}

type loggedRequest struct {
	url, accept, contentType string
	status                   int
}

func (l *requestLog) wrap(cfg *rest.Config) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			lr := loggedRequest{url: r.URL.Path + "?" + r.URL.RawQuery, accept: r.Header.Get("Accept")}
			if resp != nil {
				lr.status, lr.contentType = resp.StatusCode, resp.Header.Get("Content-Type")
			}
			l.mu.Lock()
			l.reqs = append(l.reqs, lr)
			l.mu.Unlock()
			return resp, err
		})
	})
}

// matching returns the logged requests whose path ends in suffix.
func (l *requestLog) matching(suffix string) []loggedRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []loggedRequest
	for _, r := range l.reqs {
		path, _, _ := strings.Cut(r.url, "?")
		if strings.HasSuffix(path, suffix) {
			out = append(out, r)
		}
	}
	return out
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// watchListGate turns client-go's WatchListClient feature on and off in this process
// (the reflector reads it when an informer starts).
type watchListGate struct {
	on   atomic.Bool
	base clientfeatures.Gates
}

func (g *watchListGate) Enabled(f clientfeatures.Feature) bool {
	if f == clientfeatures.WatchListClient {
		return g.on.Load()
	}
	return g.base.Enabled(f)
}

// gate is installed before anything reads client-go's gates; it starts with the
// default (KUBE_FEATURE_WatchListClient, on unless set otherwise).
var gate = func() *watchListGate {
	g := &watchListGate{base: clientfeatures.FeatureGates()}
	g.on.Store(g.base.Enabled(clientfeatures.WatchListClient))
	clientfeatures.ReplaceFeatureGates(g)
	return g
}()

func setWatchList(on bool) { gate.on.Store(on) }

// informerSet is what a client-go program builds on one fleetcache context: typed pods
// and deployments informers and, when discovery lists it, a dynamic Widget informer.
type informerSet struct {
	name      string // "fleet" or a cluster
	log       *requestLog
	events    *eventLog
	informers map[string]cache.SharedIndexInformer // by kubectl resource name
	stop      chan struct{}
}

// eventLog collects what the informers' handlers receive, as
// "ADD|UPDATE|DELETE resource cluster/namespace/name step".
type eventLog struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (e *eventLog) handler(resource string) cache.ResourceEventHandlerFuncs {
	record := func(typ string, obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		e.mu.Lock()
		e.seen[fmt.Sprintf("%s %s %s/%s/%s %s", typ, resource, m.GetAnnotations()["fleetcache.io/cluster"], m.GetNamespace(), m.GetName(), m.GetLabels()["step"])] = true
		e.mu.Unlock()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { record("ADD", obj) },
		UpdateFunc: func(_, obj any) { record("UPDATE", obj) },
		DeleteFunc: func(obj any) { record("DELETE", obj) },
	}
}

func (e *eventLog) has(ev string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[ev]
}

var widgetGVK = schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}

func startInformers(t *testing.T, bin, server, kubeContext, name string) *informerSet {
	t.Helper()
	cfg := fleetConfig(t, bin, server, kubeContext)
	s := &informerSet{name: name, log: &requestLog{}, events: &eventLog{seen: map[string]bool{}}, informers: map[string]cache.SharedIndexInformer{}, stop: make(chan struct{})}
	s.log.wrap(cfg)
	t.Cleanup(func() { close(s.stop) })

	factory := informers.NewSharedInformerFactory(kubernetes.NewForConfigOrDie(cfg), 0)
	s.informers["pods"] = factory.Core().V1().Pods().Informer()
	s.informers["deployments"] = factory.Apps().V1().Deployments().Informer()
	// As a discovery-driven client does: the RESTMapper finds widgets only where the
	// cluster serves them.
	dc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	var dyn dynamicinformer.DynamicSharedInformerFactory
	if m, err := mapper.RESTMapping(widgetGVK.GroupKind(), widgetGVK.Version); err == nil {
		dyn = dynamicinformer.NewDynamicSharedInformerFactory(dynamic.NewForConfigOrDie(cfg), 0)
		s.informers["widgets"] = dyn.ForResource(m.Resource).Informer()
	} else if !meta.IsNoMatchError(err) {
		t.Fatalf("%s: RESTMapping of widgets: %v", name, err)
	}
	for res, inf := range s.informers {
		if _, err := inf.AddEventHandler(s.events.handler(res)); err != nil {
			t.Fatal(err)
		}
	}
	factory.Start(s.stop)
	if dyn != nil {
		dyn.Start(s.stop)
	}
	return s
}

func (s *informerSet) waitSynced(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for res, inf := range s.informers {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			t.Fatalf("%s: %s informer not synced within 60s; requests: %v", s.name, res, s.log.matching(res))
		}
	}
}

// content returns "cluster/namespace/name" of every object in an informer's store.
func content(inf cache.SharedIndexInformer) []string {
	var out []string
	for _, obj := range inf.GetStore().List() {
		m, _ := meta.Accessor(obj)
		out = append(out, m.GetAnnotations()["fleetcache.io/cluster"]+"/"+m.GetNamespace()+"/"+m.GetName())
	}
	sort.Strings(out)
	return out
}

// wantIn returns the part of kubectl's "cluster/namespace/name" set an informer on the
// set's path should hold. On /fleet a stock informer keys objects by namespace/name, so
// two clusters' objects of the same name share one key: there the comparison is by
// namespace/name, each held object's cluster one that has it.
func (s *informerSet) matches(got, kubectl []string) (bool, string) {
	if s.name != "fleet" {
		var want []string
		for _, k := range kubectl {
			if strings.HasPrefix(k, s.name+"/") {
				want = append(want, k)
			}
		}
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("informer %d objects, kubectl %d: got %v want %v", len(got), len(want), got, want)
	}
	has := map[string]bool{}
	keys := map[string]bool{}
	for _, k := range kubectl {
		has[k] = true
		_, nsName, _ := strings.Cut(k, "/")
		keys[nsName] = true
	}
	gotKeys := map[string]bool{}
	for _, g := range got {
		if !has[g] {
			return false, fmt.Sprintf("informer holds %s, which kubectl does not list", g)
		}
		_, nsName, _ := strings.Cut(g, "/")
		gotKeys[nsName] = true
	}
	return len(gotKeys) == len(keys) && len(got) == len(keys), fmt.Sprintf("informer %d objects (%d keys), kubectl %d distinct namespace/names", len(got), len(gotKeys), len(keys))
}

// TestClientGoInformers runs stock client-go informers (typed pods and deployments, a
// dynamic Widget informer) against /fleet/ and every /clusters/<name>/, with client-go's
// WatchList streaming on and off: they sync to what kubectl lists per cluster, a create,
// update and delete in each cluster reaches their handlers, and the protocol on the wire
// is the one asked for.
func TestClientGoInformers(t *testing.T) {
	d := startDaemon(t)
	for _, mode := range []struct {
		name      string
		watchList bool
	}{{"WatchList", true}, {"ListWatch", false}} {
		t.Run(mode.name, func(t *testing.T) {
			setWatchList(mode.watchList)
			sets := []*informerSet{startInformers(t, d.bin, d.url, "fleet", "fleet")}
			for _, c := range fleet.Clusters {
				sets = append(sets, startInformers(t, d.bin, d.url, "fleet-"+c.Name, c.Name))
			}
			for _, s := range sets {
				s.waitSynced(t)
				if _, ok := s.informers["widgets"]; ok != (s.name == "fleet" || testfleet.HasWidgets(clusterIndex(s.name))) {
					t.Errorf("%s: discovery lists widgets: %v; the cluster serves them: %v", s.name, ok, !ok)
				}
			}
			for _, res := range []string{"pods", "deployments", "widgets"} {
				want := kubectlSet(t, res, "-A")
				for _, s := range sets {
					inf, ok := s.informers[res]
					if !ok {
						continue
					}
					waitFor(t, 30*time.Second, s.name+" "+res+" equals kubectl", func() (bool, string) { return s.matches(content(inf), want) })
				}
			}
			for _, s := range sets {
				checkProtocol(t, s, mode.watchList)
			}
			changeEveryCluster(t, sets, strings.ToLower(mode.name))
		})
	}
}

func clusterIndex(name string) int {
	for _, c := range fleet.Clusters {
		if c.Name == name {
			return c.Index
		}
	}
	return -1
}

// checkProtocol asserts the requests the pods informer sent: one streaming watch-list
// (sendInitialEvents, NotOlderThan, bookmarks) and no list with WatchList on; a list and
// a plain watch with it off.
func checkProtocol(t *testing.T, s *informerSet, watchList bool) {
	t.Helper()
	var lists, streams, watches int
	reqs := s.log.matching("/pods")
	for _, r := range reqs {
		switch {
		case !strings.Contains(r.url, "watch=true"):
			lists++
		case strings.Contains(r.url, "sendInitialEvents=true") && strings.Contains(r.url, "resourceVersionMatch=NotOlderThan") && strings.Contains(r.url, "allowWatchBookmarks=true"):
			streams++
		default:
			watches++
		}
		if r.status != http.StatusOK {
			t.Errorf("%s: %s answered %d", s.name, r.url, r.status)
		}
		// Typed clients ask for protobuf first and get it.
		if strings.HasPrefix(r.accept, "application/vnd.kubernetes.protobuf") && !strings.HasPrefix(r.contentType, "application/vnd.kubernetes.protobuf") {
			t.Errorf("%s: %s: asked for %q, got %q", s.name, r.url, r.accept, r.contentType)
		}
	}
	if watchList && (streams == 0 || lists != 0) || !watchList && (lists == 0 || watches == 0 || streams != 0) {
		t.Errorf("%s, WatchList %v: %d lists, %d watch-list streams, %d watches: %v", s.name, watchList, lists, streams, watches, reqs)
	}
}

// changeEveryCluster creates, updates and deletes a pod, a deployment and (where served)
// a widget in every cluster, and waits for each step to reach the handlers of the
// informers on /fleet and on that cluster's path.
func changeEveryCluster(t *testing.T, sets []*informerSet, tag string) {
	t.Helper()
	ctx := context.Background()
	type target struct {
		cluster *testfleet.Cluster
		name    string
		cs      kubernetes.Interface
		dyn     dynamic.Interface
	}
	var targets []target
	for _, c := range fleet.Clusters {
		targets = append(targets, target{c, "cg-" + tag + "-" + c.Name, kubernetes.NewForConfigOrDie(c.AdminConfig()), dynamic.NewForConfigOrDie(c.AdminConfig())})
	}
	const ns = "payments" // seeded in every cluster, with its default ServiceAccount
	labels := func(step string) map[string]string { return map[string]string{"app": "clientgo-test", "step": step} }
	widgets := func(tg target) dynamic.ResourceInterface { return tg.dyn.Resource(testfleet.WidgetGVR).Namespace(ns) }
	expect := func(typ, step string) {
		for _, tg := range targets {
			resources := []string{"pods", "deployments"}
			if testfleet.HasWidgets(tg.cluster.Index) {
				resources = append(resources, "widgets")
			}
			for _, s := range sets {
				if s.name != "fleet" && s.name != tg.cluster.Name {
					continue
				}
				for _, res := range resources {
					ev := fmt.Sprintf("%s %s %s/%s/%s %s", typ, res, tg.cluster.Name, ns, tg.name, step)
					waitFor(t, 30*time.Second, s.name+": "+ev, func() (bool, string) { return s.events.has(ev), "not received" })
				}
			}
		}
	}
	for _, tg := range targets {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tg.name, Namespace: ns, Labels: labels("created")},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/clientgo:1"}}}}
		if _, err := tg.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: tg.name, Namespace: ns, Labels: labels("created")},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](0), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": tg.name}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": tg.name}}, Spec: pod.Spec}}}
		if _, err := tg.cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if testfleet.HasWidgets(tg.cluster.Index) {
			w := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "example.com/v1", "kind": "Widget",
				"metadata": map[string]any{"name": tg.name, "namespace": ns, "labels": map[string]any{"app": "clientgo-test", "step": "created"}},
				"spec":     map[string]any{"color": "red", "size": int64(1)}}}
			if _, err := widgets(tg).Create(ctx, w, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			_ = tg.cs.CoreV1().Pods(ns).Delete(ctx, tg.name, metav1.DeleteOptions{})
			_ = tg.cs.AppsV1().Deployments(ns).Delete(ctx, tg.name, metav1.DeleteOptions{})
			if testfleet.HasWidgets(tg.cluster.Index) {
				_ = widgets(tg).Delete(ctx, tg.name, metav1.DeleteOptions{})
			}
		})
	}
	expect("ADD", "created")

	patch := []byte(`{"metadata":{"labels":{"step":"updated"}}}`)
	for _, tg := range targets {
		if _, err := tg.cs.CoreV1().Pods(ns).Patch(ctx, tg.name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := tg.cs.AppsV1().Deployments(ns).Patch(ctx, tg.name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if testfleet.HasWidgets(tg.cluster.Index) {
			if _, err := widgets(tg).Patch(ctx, tg.name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	expect("UPDATE", "updated")

	for _, tg := range targets {
		if err := tg.cs.CoreV1().Pods(ns).Delete(ctx, tg.name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		if err := tg.cs.AppsV1().Deployments(ns).Delete(ctx, tg.name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if testfleet.HasWidgets(tg.cluster.Index) {
			if err := widgets(tg).Delete(ctx, tg.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	expect("DELETE", "updated")
}

// daemonAt runs a fleetcache on a fixed address (so that clients can reconnect to a
// restarted one) until stop is called.
func daemonAt(t testing.TB, bin, addr, config string) (stop func()) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "fleetcache.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", config, "--listen", addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop = func() {
		_ = cmd.Process.Kill()
		<-done
	}
	t.Cleanup(stop)
	if err := waitReady("http://"+addr, logPath); err != nil {
		t.Fatal(err)
	}
	return stop
}

// TestClientGoInformersResyncAfterDaemonRestart restarts the daemon under a synced
// WatchList pods informer while a pod is deleted and another created: the informer's
// resumed watch gets 410 Expired (the new process cannot replay what it never saw),
// it relists, holds exactly what kubectl lists, keeps following changes, and did so with
// a handful of requests rather than an error loop.
func TestClientGoInformersResyncAfterDaemonRestart(t *testing.T) {
	d := startDaemon(t)
	setWatchList(true)
	addr := freeAddr(t)
	stop := daemonAt(t, d.bin, addr, d.config)
	s := startInformers(t, d.bin, "http://"+addr, "fleet", "fleet")
	s.waitSynced(t)
	pods := s.informers["pods"]
	want := kubectlSet(t, "pods", "-A")
	waitFor(t, 30*time.Second, "pods synced", func() (bool, string) { return s.matches(content(pods), want) })

	ctx := context.Background()
	c := fleet.Clusters[1]
	cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
	const ns = "payments"
	newPod := func(name string) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/clientgo:1"}}}}
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}) })
	}
	newPod("cg-restart-gone")
	waitFor(t, 30*time.Second, "pod seen", func() (bool, string) {
		return s.events.has("ADD pods " + c.Name + "/" + ns + "/cg-restart-gone "), "not yet"
	})

	stop()
	before := len(s.log.matching("/pods"))
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "cg-restart-gone", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	newPod("cg-restart-born")
	daemonAt(t, d.bin, addr, d.config)

	want = kubectlSet(t, "pods", "-A")
	waitFor(t, 60*time.Second, "informer resynced after the restart", func() (bool, string) { return s.matches(content(pods), want) })
	if !s.events.has("DELETE pods " + c.Name + "/" + ns + "/cg-restart-gone ") {
		t.Error("the pod deleted while the daemon was down never reached the delete handler")
	}
	// Still following: a change after the restart arrives.
	newPod("cg-restart-after")
	waitFor(t, 30*time.Second, "change after the restart", func() (bool, string) {
		return s.events.has("ADD pods " + c.Name + "/" + ns + "/cg-restart-after "), "not yet"
	})
	after := s.log.matching("/pods")[before:]
	// The last request is the fresh stream the relist opened: no resourceVersion.
	if last := after[len(after)-1]; !strings.Contains(last.url, "sendInitialEvents=true") || strings.Contains(last.url, "resourceVersion=") || last.status != http.StatusOK {
		t.Errorf("last request after the restart %v: want a watch-list stream from the current state", last)
	}
	// Reconnect attempts while the daemon was down (connection refused, backed off),
	// the resumed watch answered 410, one fresh watch-list stream: a few requests.
	if len(after) > 12 {
		t.Errorf("%d pods requests after the restart, an error loop? %v", len(after), after)
	}
	t.Logf("requests after the restart: %v", after)
}
