package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// Freshness tests: a fleetcache whose connection to one cluster goes through a proxy that
// delays, freezes or cuts it, while a writer patches a ConfigMap in that cluster straight
// at its apiserver. Each test checks what fleetcache claims (phase, staleness bound,
// partial) against what is true at the moment of the claim.

// freshnessProbeInterval and freshnessIdleProof are the proxied daemon's settings; its
// staleAfter is the default, idle proof + 2 probe intervals + 5s.
const (
	freshnessProbeInterval = time.Second
	freshnessIdleProof     = 5 * time.Second
)

// proxiedDaemon is a fleetcache process whose connection to victim goes through proxy.
type proxiedDaemon struct {
	*process
	proxy  *testfleet.Proxy
	victim *testfleet.Cluster
}

func startProxiedDaemon(t testing.TB) *proxiedDaemon {
	t.Helper()
	// The request timeout exceeds the 2s delay the tests inject.
	return startProxiedDaemonWith(t, "resources: [{name: configmaps}, {name: pods}, {name: namespaces}]\n"+
		fmt.Sprintf("cluster: {probeInterval: %s, requestTimeout: 4s, idleProofInterval: %s, rediscoveryInterval: 5s}\n",
			freshnessProbeInterval, freshnessIdleProof))
}

// startProxiedDaemonWith starts a daemon with settings (YAML lines) added to its
// kubeconfig and contexts; with none, every setting is the default.
func startProxiedDaemonWith(t testing.TB, settings string, env ...string) *proxiedDaemon {
	t.Helper()
	return startProxiedDaemonFor(t, 0, settings, env...)
}

// startProxiedDaemonFor is startProxiedDaemonWith with fleet.Clusters[victim] behind the
// proxy.
func startProxiedDaemonFor(t testing.TB, victimIndex int, settings string, env ...string) *proxiedDaemon {
	t.Helper()
	shared := startDaemon(t) // seeds the fleet and builds the binary
	victim := fleet.Clusters[victimIndex]
	proxy, err := victim.StartProxy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	kc, err := clientcmd.LoadFromFile(fleet.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := kc.Contexts[victim.Name+"-reader"]
	if ctx == nil {
		t.Fatalf("no context %s-reader", victim.Name)
	}
	entry := kc.Clusters[ctx.Cluster].DeepCopy()
	entry.Server = proxy.Server()
	kc.Clusters["proxied"] = entry
	ctx.Cluster = "proxied"
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "kubeconfig: [%s]\ncontexts:\n  include: ['*-reader']\n  aliases:\n", kubeconfig)
	for _, c := range fleet.Clusters {
		fmt.Fprintf(&cfg, "    %s-reader: %s\n", c.Name, c.Name)
	}
	cfg.WriteString(settings)
	cfg.WriteString("log: {level: debug}\n")
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, shared.bin, env, "--config", config)
	return &proxiedDaemon{process: p, proxy: proxy, victim: victim}
}

// claim is one answer of /api/v1/objects for the victim's ConfigMaps: the items and
// what the answer says of their freshness.
type claim struct {
	sent      time.Time // when the request was sent
	partial   bool
	phase     string
	reason    string
	resPhase  string
	resReason string
	staleness *float64
	items     map[string]string // namespace/name -> resourceVersion
	seqs      map[string]string // namespace/name -> the patcher's "seq" annotation
}

func (d *proxiedDaemon) claim(t testing.TB) claim {
	t.Helper()
	q := url.Values{"resource": {"configmaps"}, "cluster": {d.victim.Name}, "limit": {"5000"}}
	var page struct {
		Clusters []struct {
			Cluster          string   `json:"cluster"`
			Phase            string   `json:"phase"`
			Reason           string   `json:"reason"`
			ResourcePhase    string   `json:"resourcePhase"`
			ResourceReason   string   `json:"resourceReason"`
			StalenessSeconds *float64 `json:"stalenessSeconds"`
		} `json:"clusters"`
		Partial bool `json:"partial"`
		Items   []struct {
			Object struct {
				Metadata metav1.ObjectMeta `json:"metadata"`
			} `json:"object"`
		} `json:"items"`
		Continue string `json:"continue"`
	}
	c := claim{sent: time.Now(), items: map[string]string{}, seqs: map[string]string{}}
	dd := &daemon{url: d.url}
	if code := dd.getJSON(t, "/api/v1/objects", q, &page); code != http.StatusOK {
		t.Fatalf("objects: %d", code)
	}
	if page.Continue != "" || len(page.Clusters) != 1 {
		t.Fatalf("unexpected answer: continue %q, %d clusters", page.Continue, len(page.Clusters))
	}
	f := page.Clusters[0]
	c.partial, c.phase, c.reason, c.resPhase, c.resReason, c.staleness = page.Partial, f.Phase, f.Reason, f.ResourcePhase, f.ResourceReason, f.StalenessSeconds
	for _, it := range page.Items {
		m := it.Object.Metadata
		c.items[m.Namespace+"/"+m.Name] = m.ResourceVersion
		if v, ok := m.Annotations["seq"]; ok {
			c.seqs[m.Namespace+"/"+m.Name] = v
		}
	}
	return c
}

func (c claim) String() string {
	st := "none"
	if c.staleness != nil {
		st = fmt.Sprintf("%.3fs", *c.staleness)
	}
	return fmt.Sprintf("partial=%v cluster %s/%s, configmaps %s/%s, staleness %s", c.partial, c.phase, c.reason, c.resPhase, c.resReason, st)
}

// covers reports whether the claim says the cache is complete and current and holds
// everything the apiserver had at t.
func (c claim) covers(t time.Time) bool {
	return !c.partial && c.phase == "Synced" && c.resPhase == "Synced" && c.staleness != nil &&
		c.sent.Add(-time.Duration(*c.staleness*float64(time.Second))).After(t)
}

// truth lists the victim's ConfigMaps straight from its apiserver.
func truth(t testing.TB, victim *testfleet.Cluster) map[string]string {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(victim.AdminConfig())
	l, err := cs.CoreV1().ConfigMaps("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, cm := range l.Items {
		out[cm.Namespace+"/"+cm.Name] = cm.ResourceVersion
	}
	return out
}

// diff returns the objects missing from got (or at another resourceVersion) and the
// ghosts in got, against want.
func diff(got, want map[string]string) (lost, ghosts []string) {
	for k, rv := range want {
		if got[k] != rv {
			lost = append(lost, k+"@"+rv)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			ghosts = append(ghosts, k)
		}
	}
	sort.Strings(lost)
	sort.Strings(ghosts)
	return lost, ghosts
}

// patcher patches one annotation of one ConfigMap in a cluster at a steady rate, straight
// at the apiserver, and records when each value was sent.
type patcher struct {
	name  string
	write sync.Mutex // held during each write; pause takes it
	mu    sync.Mutex // guards sent and acked
	sent  map[string]time.Time
	acked []time.Time   // acked[i-1]: when the write of value i was acknowledged (zero: failed)
	took  time.Duration // total time the successful writes took
	stop  context.CancelFunc
	done  chan struct{}
	count int
}

func newConfigMap(name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"e2e": "freshness"}}}
}

func startPatcher(t testing.TB, c *testfleet.Cluster, perSecond int) *patcher {
	t.Helper()
	cfg := c.AdminConfig()
	// client-go's default limit (5 requests/s) would hold writes back and add its wait to
	// the measured lag.
	cfg.QPS, cfg.Burst = 1000, 1000
	cs := kubernetes.NewForConfigOrDie(cfg)
	name := fmt.Sprintf("patched-%d", time.Now().UnixNano())
	if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), newConfigMap(name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().ConfigMaps("default").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	ctx, cancel := context.WithCancel(context.Background())
	p := &patcher{name: name, sent: map[string]time.Time{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			p.write.Lock()
			v := fmt.Sprint(i)
			p.mu.Lock()
			p.sent[v] = time.Now()
			p.mu.Unlock()
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"seq":%q}}}`, v)
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			start := time.Now()
			_, err := cs.CoreV1().ConfigMaps("default").Patch(wctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			wcancel()
			p.mu.Lock()
			for len(p.acked) < i {
				p.acked = append(p.acked, time.Time{})
			}
			if err == nil {
				p.count++
				p.acked[i-1] = time.Now()
				p.took += time.Since(start)
			}
			p.mu.Unlock()
			p.write.Unlock()
		}
	}()
	t.Cleanup(p.halt)
	return p
}

// pause waits for the write in flight and holds the others back; it returns when the
// last write was acknowledged.
func (p *patcher) pause() time.Time { p.write.Lock(); return time.Now() }
func (p *patcher) resume()          { p.write.Unlock() }
func (p *patcher) halt() {
	p.stop()
	<-p.done
}

// ackedBefore returns the newest value whose write was acknowledged before t (0: none).
func (p *patcher) ackedBefore(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.acked); i > 0; i-- {
		if at := p.acked[i-1]; !at.IsZero() && at.Before(t) {
			return i
		}
	}
	return 0
}

// ackedAt returns when the write of value v was acknowledged.
func (p *patcher) ackedAt(v int) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v < 1 || v > len(p.acked) {
		return time.Time{}
	}
	return p.acked[v-1]
}

// sentAt returns when the write of value v was sent.
func (p *patcher) sentAt(v string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.sent[v]
	return at, ok
}

// firstTruthfulClaim polls the daemon until an answer claims to cover `since` (writes
// were paused then), and checks that very answer against a fresh list from the
// apiserver. It returns how long the claim took.
func firstTruthfulClaim(t testing.TB, d *proxiedDaemon, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(within)
	var last claim
	for time.Now().Before(deadline) {
		last = d.claim(t)
		if last.covers(since) {
			lost, ghosts := diff(last.items, truth(t, d.victim))
			if len(lost)+len(ghosts) > 0 {
				t.Errorf("answer claiming to be complete and current (%s) is wrong: lost or outdated %v, ghosts %v", last, lost, ghosts)
			}
			return time.Since(since)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no answer claimed to be current within %s; last: %s", within, last)
	return 0
}

// syncLagMean reads the mean of fleetcache_sync_lag_seconds over an interval.
func syncLag(t testing.TB, d *daemon, cluster string) (sum, count float64) {
	m := find(d.scrape(t), "fleetcache_sync_lag_seconds", map[string]string{"cluster": cluster, "resource": "configmaps"})
	if m == nil || m.Histogram == nil {
		return 0, 0
	}
	return m.Histogram.GetSampleSum(), float64(m.Histogram.GetSampleCount())
}

// TestStalenessBoundUnderOneWayDelay delays everything the victim's apiserver sends to
// fleetcache by 2s for 60s, every freshness setting at its default, while a writer patches
// a ConfigMap 5 times a second straight at the apiserver (boundChecker says what is
// checked every 0.5s). The reported sync lag must say the delay (mean within [2s, 3s]),
// and once the delay is gone the first answer that claims to be current must be.
func TestStalenessBoundUnderOneWayDelay(t *testing.T) {
	d := startProxiedDaemonWith(t, "")
	dd := &daemon{url: d.url}
	p := startPatcher(t, d.victim, 5)
	b := newBoundChecker(t, d, p)
	sum0, count0 := syncLag(t, dd, d.victim.Name)
	const delay = 2 * time.Second
	d.proxy.SetDelay(delay)
	b.run(60*time.Second, nil)
	b.report("2s one-way delay, 60s", delay)
	sum1, count1 := syncLag(t, dd, d.victim.Name)
	if count1-count0 < 5 {
		t.Fatalf("only %v probes resolved in 60s", count1-count0)
	}
	if mean := (sum1 - sum0) / (count1 - count0); mean < delay.Seconds() || mean > 3 {
		t.Errorf("mean sync lag %.3fs under a 2s one-way delay, want within [2.0s, 3.0s]", mean)
	}
	d.proxy.SetDelay(0)
	pausedAt := p.pause()
	defer p.resume()
	took := firstTruthfulClaim(t, d, pausedAt, 30*time.Second)
	t.Logf("after the delay ended and writes paused, the first current claim came %s later and was true", took.Round(time.Millisecond))
}

// TestStalenessBoundOnTheListPathThroughARelist takes the LIST path two ways: against
// the fleet's v1.32 cluster, whose apiserver refuses watch-list, and against a v1.37 one
// with client-go's watch-list turned off in fleetcache (KUBE_FEATURE_WatchListClient=false).
// It delays everything the victim sends by 2s and restarts the victim's apiserver twice
// while writes go on: each restart makes the informer list again (its watch cache starts
// past the informer's position: 410), a paginated list whose pages arrive 2s late while
// the cache still serves the old objects. The bound, read every 0.5s from /metrics and
// the API, must never claim more than the cache holds.
func TestStalenessBoundOnTheListPathThroughARelist(t *testing.T) {
	for _, tc := range []struct {
		name   string
		victim int
		env    []string
	}{
		{"v1.32 apiserver without watch-list", 2, nil},
		{"client without watch-list", 0, []string{"KUBE_FEATURE_WatchListClient=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startProxiedDaemonFor(t, tc.victim, "", tc.env...)
			dd := &daemon{url: d.url}
			p := startPatcher(t, d.victim, 5)
			b := newBoundChecker(t, d, p)
			labels := map[string]string{"cluster": d.victim.Name, "resource": "configmaps"}
			relists0, _ := value(dd.scrape(t), "fleetcache_relists_total", labels)
			const delay = 2 * time.Second
			d.proxy.SetDelay(delay)
			restarts := 0
			b.run(60*time.Second, func(elapsed time.Duration) {
				if (restarts == 0 && elapsed > 10*time.Second) || (restarts == 1 && elapsed > 35*time.Second) {
					restarts++
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					if err := d.victim.Restart(ctx); err != nil {
						t.Fatalf("restart the victim: %v", err)
					}
				}
			})
			b.report(tc.name+", 2s one-way delay, 2 apiserver restarts, 60s", delay)
			relists1, _ := value(dd.scrape(t), "fleetcache_relists_total", labels)
			if relists1 <= relists0 {
				t.Fatalf("the victim's ConfigMaps were not listed again (relists %v -> %v): the test proved nothing about relists", relists0, relists1)
			}
			t.Logf("ConfigMaps relisted %v times", relists1-relists0)
			d.proxy.SetDelay(0)
			pausedAt := p.pause()
			defer p.resume()
			took := firstTruthfulClaim(t, d, pausedAt, 60*time.Second)
			t.Logf("after the delay ended and writes paused, the first current claim came %s later and was true", took.Round(time.Millisecond))
		})
	}
}

// boundChecker reads the victim's ConfigMaps' staleness bound every 0.5s from /metrics,
// then an answer of the API that holds the patched ConfigMap and its own bound. A bound B
// read at time s claims that the cache holds every write acknowledged before s-B; the
// answer, read after s, shows what the cache held (it only moves forward, relists
// included: a list is at least as new as the cache it replaces): a write acknowledged
// before s-B and missing from it proves the bound too small. A resource reported Synced
// must have a bound.
type boundChecker struct {
	t      testing.TB
	d      *proxiedDaemon
	p      *patcher
	key    string
	labels map[string]string
	start  time.Time

	minBound          map[string]float64
	minSettled        float64 // from 2s after the run began
	readings, unbound int
	maxLag            time.Duration // the largest lag seen: an acknowledged write missing from an answer
	synced, notSynced int
	maxBound          float64
}

// newBoundChecker waits until the patched ConfigMap is in a Synced cache.
func newBoundChecker(t testing.TB, d *proxiedDaemon, p *patcher) *boundChecker {
	t.Helper()
	b := &boundChecker{t: t, d: d, p: p, key: "default/" + p.name, minBound: map[string]float64{"metrics": 1e9, "api": 1e9}, minSettled: 1e9,
		labels: map[string]string{"cluster": d.victim.Name, "resource": "configmaps"}}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if c := d.claim(t); c.seqs[b.key] != "" && c.resPhase == "Synced" {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("the patched ConfigMap never reached a Synced cache: %s", d.claim(t))
		}
	}
}

// run reads for d, calling each (if not nil) before every reading.
func (b *boundChecker) run(d time.Duration, each func(elapsed time.Duration)) {
	t := b.t
	t.Helper()
	b.start = time.Now()
	dd := &daemon{url: b.d.url}
	for time.Since(b.start) < d {
		if each != nil {
			each(time.Since(b.start))
		}
		scrapedAt := time.Now()
		mb, mok := value(dd.scrape(t), "fleetcache_staleness_seconds", b.labels)
		c := b.d.claim(t)
		held := 0
		if v, ok := c.seqs[b.key]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("bad seq %q", v)
			}
			held = n
		}
		if next := b.p.ackedAt(held + 1); !next.IsZero() {
			b.maxLag = max(b.maxLag, c.sent.Sub(next))
		}
		if testing.Verbose() {
			t.Logf("%s metrics %.3f (%v) api %s holds %d, newest acked %d",
				scrapedAt.Format("15:04:05.000"), mb, mok, c, held, b.p.ackedBefore(c.sent))
		}
		if mok {
			b.check("metrics", scrapedAt, mb, held)
		}
		if c.staleness != nil {
			b.check("api", c.sent, *c.staleness, held)
		} else {
			b.unbound++
		}
		if c.resPhase == "Synced" {
			b.synced++
			if c.staleness == nil {
				t.Errorf("ConfigMaps reported Synced without a staleness bound: %s", c)
			}
		} else {
			b.notSynced++
		}
		time.Sleep(500*time.Millisecond - time.Since(scrapedAt))
	}
}

func (b *boundChecker) check(from string, at time.Time, bound float64, held int) {
	b.readings++
	b.minBound[from] = min(b.minBound[from], bound)
	b.maxBound = max(b.maxBound, bound)
	if at.Sub(b.start) > 2*time.Second {
		b.minSettled = min(b.minSettled, bound)
	}
	coveredUntil := at.Add(-time.Duration(bound * float64(time.Second)))
	if want := b.p.ackedBefore(coveredUntil); held < want {
		b.t.Errorf("%s: a staleness bound of %.3fs read at %s claims every write acknowledged before %s, but write %d (acknowledged %s before the reading) is missing; the cache holds %d",
			from, bound, at.Format("15:04:05.000"), coveredUntil.Format("15:04:05.000"), want, at.Sub(b.p.ackedAt(want)).Round(time.Millisecond), held)
	}
}

func (b *boundChecker) report(what string, delay time.Duration) {
	b.t.Helper()
	if os.Getenv("FRESHNESS_DEBUG") != "" {
		logs, _ := os.ReadFile(b.d.log)
		for _, l := range strings.Split(string(logs), "\n") {
			if strings.Contains(l, "probe") || strings.Contains(l, "phase") {
				b.t.Log(l)
			}
		}
	}
	b.t.Logf("%s: %d readings checked, %d answers without a bound; smallest bound %.3fs (metrics), %.3fs (API), %.3fs from %s after the start; largest %.3fs; largest lag seen %s; ConfigMaps Synced in %d answers, not Synced in %d",
		what, b.readings, b.unbound, b.minBound["metrics"], b.minBound["api"], b.minSettled, delay, b.maxBound, b.maxLag.Round(time.Millisecond), b.synced, b.notSynced)
}

// TestFrozenConnectionIsReportedStaleAndRecovers freezes the connection fleetcache's
// watches use while writes go on: within 10s answers must stop claiming to be current,
// then fleetcache must reconnect by itself, and its first claim to be current again must
// be true.
func TestFrozenConnectionIsReportedStaleAndRecovers(t *testing.T) {
	d := startProxiedDaemon(t)
	p := startPatcher(t, d.victim, 5)
	time.Sleep(2 * freshnessProbeInterval)
	if c := d.claim(t); !c.covers(time.Now().Add(-30 * time.Second)) {
		t.Fatalf("not current before the fault: %s", c)
	}
	frozenAt := time.Now()
	d.proxy.Freeze()
	var seen claim
	for {
		seen = d.claim(t)
		if seen.partial {
			break
		}
		if time.Since(frozenAt) > 10*time.Second {
			t.Fatalf("frozen connection not reported within 10s: %s", seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("frozen connection reported after %s: %s", time.Since(frozenAt).Round(time.Millisecond), seen)
	if seen.phase == "Synced" && seen.resPhase == "Synced" {
		t.Errorf("partial answer without a reason: %s", seen)
	}
	// fleetcache reconnects (new connections pass) and catches up with the writes made
	// meanwhile; the first claim after writes paused must be true.
	pausedAt := p.pause()
	defer p.resume()
	took := firstTruthfulClaim(t, d, pausedAt, 60*time.Second)
	t.Logf("recovered: first current claim %s after writes paused, %s after the freeze", took.Round(time.Millisecond), time.Since(frozenAt).Round(time.Millisecond))
	if v, _ := value((&daemon{url: d.url}).scrape(t), "fleetcache_cluster_connection_resets_total", map[string]string{"cluster": d.victim.Name}); v < 1 {
		t.Errorf("connection resets %v, want >= 1", v)
	}
}

// TestCutConnectionsCatchUpBeforeClaimingCurrent cuts every connection to the victim
// repeatedly while writes go on; the first claim to be current after writes paused must be
// true.
func TestCutConnectionsCatchUpBeforeClaimingCurrent(t *testing.T) {
	d := startProxiedDaemon(t)
	p := startPatcher(t, d.victim, 10)
	for range 5 {
		time.Sleep(300 * time.Millisecond)
		d.proxy.Cut()
	}
	pausedAt := p.pause()
	defer p.resume()
	d.proxy.Cut()
	took := firstTruthfulClaim(t, d, pausedAt, 60*time.Second)
	t.Logf("after cuts, first current claim %s after writes paused (%d writes made)", took.Round(time.Millisecond), p.count)
}

// TestReportedLagMatchesMeasuredLag delays everything the victim's apiserver sends to a
// fleetcache by 1s, a lag large enough for a wrong report to show, while a writer patches
// one field of one ConfigMap 5 times a second straight at the apiserver. The mean sync lag
// fleetcache reports (fleetcache_sync_lag_seconds) must match, within 0.3s, the mean
// write-to-watch lag the test measures through the same fleetcache's /api/v1/watch; the
// measured lag must include the delay, or the test would compare nothing.
func TestReportedLagMatchesMeasuredLag(t *testing.T) {
	d := startProxiedDaemon(t)
	dd := &daemon{url: d.url}
	p := startPatcher(t, d.victim, 5)
	ch, stop := openWatch(t, dd, url.Values{"resource": {"configmaps"}, "cluster": {d.victim.Name}, "fieldSelector": {"metadata.name=" + p.name}})
	defer stop()
	const delay = time.Second
	d.proxy.SetDelay(delay)
	// Probes in flight when the delay began are not measured: at most two (the periodic
	// probe and an idle proof), so the third to resolve after it was sent under it.
	_, settled := syncLag(t, dd, d.victim.Name)
	waitFor(t, 30*time.Second, "three probes resolved under the delay", func() (bool, string) {
		_, n := syncLag(t, dd, d.victim.Name)
		return n-settled >= 3, fmt.Sprintf("%v resolved", n-settled)
	})
	sum0, count0 := syncLag(t, dd, d.victim.Name)
	from := time.Now() // events of earlier writes waited in the channel: not measured
	measured := lagsThroughWatch(t, ch, p, from, 100)
	sum1, count1 := syncLag(t, dd, d.victim.Name)
	p.halt()
	if count1-count0 < 5 {
		t.Fatalf("only %v probes resolved during %d measured writes", count1-count0, len(measured))
	}
	var total float64
	for _, v := range measured {
		total += v
	}
	measuredMean := total / float64(len(measured))
	reportedMean := (sum1 - sum0) / (count1 - count0)
	p.mu.Lock()
	writeMean := p.took.Seconds() / float64(p.count)
	p.mu.Unlock()
	t.Logf("5 patches/s, 1s one-way delay: mean write-to-watch lag measured %.3fs (a write itself took %.3fs), mean sync lag reported %.3fs over %v probes",
		measuredMean, writeMean, reportedMean, count1-count0)
	if measuredMean < delay.Seconds() {
		t.Fatalf("measured lag %.3fs is below the injected %s delay: the delay was not in effect", measuredMean, delay)
	}
	if diff := reportedMean - measuredMean; diff < -0.3 || diff > 0.3 {
		t.Errorf("reported mean sync lag %.3fs is more than 0.3s from the measured %.3fs", reportedMean, measuredMean)
	}
}

// lagsThroughWatch reads n MODIFIED events of the patcher's writes sent after from, and
// returns each one's lag from its write's sending until the watch delivered it (s).
func lagsThroughWatch(t testing.TB, ch <-chan watchLine, p *patcher, from time.Time, n int) []float64 {
	t.Helper()
	var lags []float64
	deadline := time.After(2 * time.Minute)
	for len(lags) < n {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatal("watch ended")
			}
			if l.Type != "MODIFIED" {
				continue
			}
			seen := time.Now()
			if at, ok := p.sentAt(l.Object.Metadata.Annotations["seq"]); ok && at.After(from) {
				lags = append(lags, seen.Sub(at).Seconds())
			}
		case <-deadline:
			t.Fatalf("saw %d of %d updates in 2 minutes", len(lags), n)
		}
	}
	return lags
}

// TestEmptyFleetIsNotReady starts fleetcache on a kubeconfig with no contexts: it must not
// report ready (an empty answer would look complete), and must say why; with
// readiness.allowEmpty it is ready.
func TestEmptyFleetIsNotReady(t *testing.T) {
	shared := startDaemon(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, allowEmpty := range []bool{false, true} {
		config := filepath.Join(dir, fmt.Sprintf("config-%v.yaml", allowEmpty))
		cfg := fmt.Sprintf("kubeconfig: [%s]\ninCluster: {mode: never}\nreadiness: {allowEmpty: %v}\n", kubeconfig, allowEmpty)
		if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		p := startProcessNoWait(t, shared.bin, "--config", config, "--listen", addr)
		d := &daemon{url: "http://" + addr}
		var code int
		var body string
		// Poll until the daemon answers and has read its kubeconfig (verbose says so).
		waitFor(t, 20*time.Second, "readyz answers", func() (bool, string) {
			resp, err := http.Get(d.url + "/readyz?verbose")
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			b := new(strings.Builder)
			_, _ = io.Copy(b, resp.Body)
			code, body = resp.StatusCode, b.String()
			return !strings.Contains(body, "not loaded yet"), body
		})
		if allowEmpty && code != http.StatusOK || !allowEmpty && (code != http.StatusServiceUnavailable || !strings.Contains(body, "no clusters")) {
			t.Errorf("allowEmpty %v: /readyz %d\n%s", allowEmpty, code, body)
		}
		_ = p.Process.Kill()
	}
}

// startProcessNoWait starts a fleetcache without waiting for it to be ready.
func startProcessNoWait(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd
}

// TestCLIClustersShowsStaleness: `fleetcache clusters` prints each cluster's staleness
// bound next to its phase.
func TestCLIClustersShowsStaleness(t *testing.T) {
	d := startDaemon(t)
	var out string
	waitFor(t, 30*time.Second, "every cluster Synced and proven", func() (bool, string) {
		out = d.cli(t, "clusters")
		for _, c := range fleet.Clusters {
			found := false
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) > 4 && f[0] == c.Name && f[1] == "Synced" && f[4] != "<unproven>" {
					if _, err := time.ParseDuration(f[4]); err == nil {
						found = true
					}
				}
			}
			if !found {
				return false, out
			}
		}
		return true, ""
	})
	if !strings.Contains(strings.SplitN(out, "\n", 2)[0], "STALENESS") {
		t.Errorf("no STALENESS column:\n%s", out)
	}
}
