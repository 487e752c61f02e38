package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// countPhase returns the ConfigMaps' resource phase in cluster, as a count in ns reports it.
func countPhase(t *testing.T, d *daemon, cluster, ns string) string {
	t.Helper()
	var res struct {
		Clusters []struct {
			ResourcePhase string `json:"resourcePhase"`
		} `json:"clusters"`
	}
	if code := d.getJSON(t, "/api/v1/count", url.Values{"resource": {"configmaps"}, "cluster": {cluster}, "namespace": {ns}}, &res); code != http.StatusOK || len(res.Clusters) != 1 {
		t.Fatalf("count: %d, %d clusters", code, len(res.Clusters))
	}
	return res.Clusters[0].ResourcePhase
}

// waitForCount waits until /api/v1/count for q says want, within two minutes.
func waitForCount(t *testing.T, d *daemon, q url.Values, want int) {
	t.Helper()
	var res struct {
		Total int `json:"total"`
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if code := d.getJSON(t, "/api/v1/count", q, &res); code == http.StatusOK && res.Total == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("count %v: %d, want %d", q, res.Total, want)
		}
	}
}

// TestRelistOfTenThousandUnchangedObjectsSendsNoEvents puts 10,000 ConfigMaps in one
// namespace of a real cluster, opens a fleetcache watch on that namespace, and makes the
// informer list again by restarting the apiserver (its new watch cache starts past the
// informer's position: the resumed watch gets 410 Gone), on both of client-go's paths:
// a watch-list stream and a plain LIST. Nothing in the namespace changed, so the watch
// must receive no ADDED, MODIFIED or DELETED event (bookmarks aside): a relist that
// re-sent every object would push 10,000 MODIFIED events to every watcher.
func TestRelistOfTenThousandUnchangedObjectsSendsNoEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 10,000 objects")
	}
	startDaemon(t) // the shared fleet, seeded
	victim := fleet.Clusters[0]
	const n = 10000
	ns := fmt.Sprintf("relist-%d", time.Now().UnixNano())
	createConfigMaps(t, victim.AdminConfig(), ns, n)
	for _, path := range []struct {
		name string
		env  []string
	}{
		{"watch-list", nil},
		{"list", []string{"KUBE_FEATURE_WatchListClient=false"}},
	} {
		t.Run(path.name, func(t *testing.T) {
			d := startProxiedDaemonWith(t, "resources: [{name: configmaps}]\n", path.env...)
			dd := &daemon{url: d.url}
			labels := map[string]string{"cluster": victim.Name, "resource": "configmaps"}
			waitForCount(t, dd, url.Values{"resource": {"configmaps"}, "cluster": {victim.Name}, "namespace": {ns}}, n)
			relists0, _ := value(dd.scrape(t), "fleetcache_relists_total", labels)
			ch, stop := openWatch(t, dd, url.Values{"resource": {"configmaps"}, "cluster": {victim.Name}, "namespace": {ns}})
			defer stop()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := victim.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			// Wait for the relist to be in the store, then for the resource to be proven
			// current after it: every event it caused has been sent by then.
			var relists float64
			for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
				relists, _ = value(dd.scrape(t), "fleetcache_relists_total", labels)
				if relists > relists0 && countPhase(t, dd, victim.Name, ns) == "Synced" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no relist reached a Synced cache within 2 minutes of the restart (relists %v -> %v)", relists0, relists)
				}
			}
			var changes []string
			bookmarks := 0
			for drained := false; !drained; {
				select {
				case l, ok := <-ch:
					if !ok {
						t.Fatal("the watch ended")
					}
					if l.Type == "BOOKMARK" {
						bookmarks++
						continue
					}
					changes = append(changes, l.Type+" "+l.Object.Metadata.Name)
				case <-time.After(2 * time.Second):
					drained = true
				}
			}
			t.Logf("%s path: %v relist(s) of %d unchanged ConfigMaps sent %d events (and %d bookmarks)", path.name, relists-relists0, n, len(changes), bookmarks)
			if len(changes) > 0 {
				t.Errorf("a relist of unchanged objects sent %d events, first: %v", len(changes), changes[:min(5, len(changes))])
			}
		})
	}
}

// createConfigMaps creates n ConfigMaps in a new namespace ns, and deletes them when the
// test ends (the test fleet runs no namespace controller).
func createConfigMaps(t *testing.T, cfg *rest.Config, ns string, n int) {
	t.Helper()
	cfg.QPS, cfg.Burst = 2000, 2000
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().ConfigMaps(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	work := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%05d", i), Namespace: ns},
					Data: map[string]string{"index": fmt.Sprint(i)}}
				if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("create ConfigMaps: %v", err)
	default:
	}
}
