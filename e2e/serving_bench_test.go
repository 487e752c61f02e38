package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
)

// servingPods is the pods per cluster of the serving benchmarks: FLEETCACHE_BENCH_PODS,
// default 5,000 (3 clusters × 5,000 pods, the fleet of issue #13).
func servingPods(b *testing.B) int {
	if s := os.Getenv("FLEETCACHE_BENCH_PODS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("FLEETCACHE_BENCH_PODS=%q: %v", s, err)
		}
		return n
	}
	return 5000
}

// kubectlSetParallel is kubectlSet with the contexts asked at once, as people write the
// loop (`for c in ...; do kubectl --context $c ... & done; wait`).
func kubectlSetParallel(t testing.TB, resource string, args ...string) []string {
	t.Helper()
	outs := fanOut(t, append([]string{"get", resource, "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}`}, args...))
	var out []string
	for i, c := range fleet.Clusters {
		for _, line := range strings.Fields(outs[i]) {
			out = append(out, c.Name+"/"+line)
		}
	}
	sort.Strings(out)
	return out
}

// fanOut runs kubectl with args once per cluster, in parallel, and returns each output.
func fanOut(t testing.TB, args []string) []string {
	contexts := make([]string, len(fleet.Clusters))
	for i, c := range fleet.Clusters {
		contexts[i] = c.Name + "-reader"
	}
	return fanOutContexts(t, fleet.Kubeconfig, contexts, args...)
}

// cpuTime is a process's user+system CPU time, from /proc (10 ms resolution).
func cpuTime(t testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which may hold spaces), from field 3 on.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// allObjects reads every pod as JSON through /api/v1/objects, as a script would with
// curl: the pages' bytes, and the continue token at the end of each. It returns the
// number of items.
func allObjects(t testing.TB, d *daemon, buf *bytes.Buffer) int {
	items := 0
	q := url.Values{"resource": {"pods"}, "limit": {"5000"}}
	for {
		resp, err := http.Get(d.url + "/api/v1/objects?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		buf.Reset()
		_, err = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("objects: %v %s", err, resp.Status)
		}
		body := buf.Bytes()
		items += bytes.Count(body, []byte(`","object":{`)) // {"cluster":"...","object":{...}}
		tail := body[max(0, len(body)-512):]
		i := bytes.LastIndex(tail, []byte(`"continue":"`))
		if i < 0 {
			return items
		}
		rest := tail[i+len(`"continue":"`):]
		q.Set("continue", string(rest[:bytes.IndexByte(rest, '"')]))
	}
}

// rows counts a printed table's rows (lines after the header), summed over outputs.
func rows(outs ...string) int {
	n := 0
	for _, o := range outs {
		if lines := strings.Count(strings.TrimSpace(o), "\n"); strings.TrimSpace(o) != "" {
			n += lines
		}
	}
	return n
}

// BenchmarkRealFleetServing answers "every pod" on the real fleet (3 clusters ×
// FLEETCACHE_BENCH_PODS pods) through fleetcache and with kubectl run once per context,
// the contexts in parallel, in the same run: kubectl's table (and -o wide, -o json)
// through `fleetcache kubeconfig`, the fleetcache CLI's table, and every pod as JSON
// through /api/v1/objects. daemon-share is the daemon's CPU time over the wall time of
// the fleetcache answer: how much of it the server is.
func BenchmarkRealFleetServing(b *testing.B) {
	shared := startDaemon(b)
	seedBig(b, servingPods(b))
	// A daemon of its own with the default continue TTL (15m): the shared one's 3 s
	// exists for the expiry test, and kubectl takes longer than that to decode a 32 MiB
	// answer before it asks for the next.
	p := startProcess(b, shared.bin, nil, "--config", shared.config, "--continue-ttl", "15m")
	d := &daemon{url: p.url, bin: shared.bin, config: shared.config, log: p.log, pid: p.cmd.Process.Pid}
	want := len(kubectlSetParallel(b, "pods", "-A"))
	waitFor(b, 180*time.Second, "daemon caught up", func() (bool, string) {
		got := len(apiSet(b, d, url.Values{"resource": {"pods"}, "limit": {"5000"}}))
		return got == want, fmt.Sprintf("%d vs %d", got, want)
	})
	k := newFleetKubectl(b, d)
	replay := replayKubectl(b, d)
	var buf bytes.Buffer
	cases := []struct {
		name  string
		fleet func() int // the number of rows or objects
		fan   func() int
		// floor is the same command against a server that costs nothing (replayKubectl);
		// nil where the answer is not one Table.
		floor func() int
	}{
		{"kubectl-get-pods",
			func() int { return rows(k.mustB(b, "get", "pods", "-A")) },
			func() int { return rows(fanOut(b, []string{"get", "pods", "-A"})...) },
			func() int { return rows(replay.mustB(b, "get", "pods", "-A")) }},
		{"kubectl-get-pods-chunk-size-0",
			func() int { return rows(k.mustB(b, "get", "pods", "-A", "--chunk-size=0")) },
			func() int { return rows(fanOut(b, []string{"get", "pods", "-A", "--chunk-size=0"})...) },
			func() int { return rows(replay.mustB(b, "get", "pods", "-A", "--chunk-size=0")) }},
		{"kubectl-get-pods-wide",
			func() int { return rows(k.mustB(b, "get", "pods", "-A", "-o", "wide")) },
			func() int { return rows(fanOut(b, []string{"get", "pods", "-A", "-o", "wide"})...) },
			func() int { return rows(replay.mustB(b, "get", "pods", "-A", "-o", "wide")) }},
		{"kubectl-get-pods-json",
			func() int { return strings.Count(k.mustB(b, "get", "pods", "-A", "-o", "json"), `"kind": "Pod"`) },
			func() int {
				n := 0
				for _, o := range fanOut(b, []string{"get", "pods", "-A", "-o", "json"}) {
					n += strings.Count(o, `"kind": "Pod"`)
				}
				return n
			}, nil},
		{"cli-get-pods",
			func() int { return rows(d.cli(b, "get", "pods", "-A")) },
			func() int { return rows(fanOut(b, []string{"get", "pods", "-A"})...) }, nil},
		{"objects-json-vs-kubectl-json",
			func() int { return allObjects(b, d, &buf) },
			func() int {
				n := 0
				for _, o := range fanOut(b, []string{"get", "pods", "-A", "-o", "json"}) {
					n += strings.Count(o, `"kind": "Pod"`)
				}
				return n
			}, nil},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var fc, fan, floor, cpu time.Duration
			var fcN, fanN, floorN int
			for i := range b.N {
				run := func() {
					start, c0 := time.Now(), cpuTime(b, d.pid)
					fcN = tc.fleet()
					fc += time.Since(start)
					cpu += cpuTime(b, d.pid) - c0
				}
				runFan := func() {
					start := time.Now()
					fanN = tc.fan()
					fan += time.Since(start)
				}
				runFloor := func() {
					if tc.floor != nil {
						start := time.Now()
						floorN = tc.floor()
						floor += time.Since(start)
					}
				}
				if i%2 == 0 { // alternate, so that none always runs on a warmer machine
					run()
					runFan()
					runFloor()
				} else {
					runFloor()
					runFan()
					run()
				}
			}
			if fcN != fanN || fcN < want {
				b.Fatalf("answers differ: fleetcache %d, kubectl %d (pods: %d)", fcN, fanN, want)
			}
			if tc.floor != nil {
				if floorN != fcN {
					b.Fatalf("answers differ: fleetcache %d, replayed %d", fcN, floorN)
				}
				// The speedup a server that costs nothing would reach in this run.
				b.ReportMetric(float64(floor.Microseconds())/float64(b.N)/1000, "floor-ms")
				b.ReportMetric(float64(fan)/float64(floor), "floor-speedup")
			}
			n := float64(b.N)
			b.ReportMetric(float64(fc.Microseconds())/n/1000, "fleetcache-ms")
			b.ReportMetric(float64(fan.Microseconds())/n/1000, "kubectl-parallel-ms")
			b.ReportMetric(float64(fan)/float64(fc), "speedup")
			b.ReportMetric(float64(cpu.Microseconds())/n/1000, "daemon-cpu-ms")
			b.ReportMetric(float64(cpu)/float64(fc), "daemon-share")
			b.ReportMetric(float64(fcN), "objects")
		})
	}
}

func (k *fleetKubectl) mustB(t testing.TB, args ...string) string {
	t.Helper()
	out, stderr, err := k.run(args...)
	if err != nil {
		t.Fatalf("kubectl %v through fleetcache: %v\n%s", args, err, stderr)
	}
	return out
}

// BenchmarkRealFleetHeapPerObject caches the real fleet in process, exactly as the daemon
// composes it (a clusters.Fleet feeding an aggregator.Index, the e2e resources), and
// reports the heap it holds per cached object once every cluster is synced: the informer
// stores and the unified index together.
func BenchmarkRealFleetHeapPerObject(b *testing.B) {
	startDaemon(b) // seeds the small inventory, as the other benchmarks see it
	seedBig(b, servingPods(b))
	for range b.N {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		filter := clusters.ContextFilter{Include: []string{"*-reader"}, Aliases: map[string]string{}}
		for _, c := range fleet.Clusters {
			filter.Aliases[c.Name+"-reader"] = c.Name
		}
		var specs []clusters.ResourceSpec
		for _, r := range e2eResources {
			specs = append(specs, clusters.ResourceSpec{Name: r})
		}
		ref := &struct{ *clusters.Fleet }{}
		ix := aggregator.New(ref, aggregator.Options{})
		f := clusters.NewFleet(clusters.KubeconfigSource{Paths: []string{fleet.Kubeconfig}, Filter: filter}, clusters.FleetOptions{Cluster: clusters.Options{
			Resources: specs, Handler: ix, ProbeInterval: time.Hour,
		}})
		ref.Fleet = f
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = f.Start(ctx); close(done) }()
		objects := 0
		waitFor(b, 180*time.Second, "in-process fleet synced", func() (bool, string) {
			synced := 0
			objects = 0
			for _, s := range f.Status() {
				if s.InitialSyncTime != nil {
					synced++
				}
				objects += s.Objects()
			}
			return synced == len(fleet.Clusters), fmt.Sprintf("%d of %d synced", synced, len(fleet.Clusters))
		})
		runtime.GC()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
		b.ReportMetric(float64(objects), "objects")
		b.ReportMetric(heap/float64(objects), "heap-B/obj")
		b.ReportMetric(heap/(1<<20), "heap-MiB")
		runtime.KeepAlive(ix)
		cancel()
		<-done
	}
}

// replayKubectl is kubectl through a server that answers the fleet's pod Table with
// bytes fleetcache wrote earlier, held in memory, and passes every other request
// (discovery) to the daemon: a server that costs nothing. kubectl's wall time against
// it is the floor any server sending these rows can reach.
func replayKubectl(t testing.TB, d *daemon) *fleetKubectl {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, d.url+"/fleet/api/v1/pods", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", tableAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	table, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.HasPrefix(table, []byte(`{"kind":"Table"`)) {
		t.Fatalf("the fleet's pod table: %v %s %.200s", err, resp.Status, table)
	}
	target, err := url.Parse(d.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fleet/api/v1/pods" && strings.Contains(r.Header.Get("Accept"), "as=Table") {
			w.Header().Set("Content-Type", "application/json")
			w.Write(table)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return newFleetKubectl(t, &daemon{url: srv.URL, bin: d.bin})
}

// BenchmarkManyContextsServing asks one question of a fleet of many contexts
// (FLEETCACHE_BENCH_CONTEXTS, default 200, spread over the real clusters, each a cluster
// of its own to fleetcache): `kubectl get deployments -A` through fleetcache, against
// kubectl run once per context, every context at once, in the same run. This is the
// fleet's other shape: many small clusters, where the fan-out pays a kubectl process,
// a connection and discovery per context.
func BenchmarkManyContextsServing(b *testing.B) {
	n := 200
	if s := os.Getenv("FLEETCACHE_BENCH_CONTEXTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("FLEETCACHE_BENCH_CONTEXTS=%q: want a positive number", s)
		}
	}
	sf := newShardFleet(b, n, "[{name: deployments.apps}]")
	r := sf.start(b, "", 0)
	d := &daemon{url: r.url, bin: sf.bin}
	contexts := make([]string, n)
	for i := range contexts {
		contexts[i] = fmt.Sprintf("ctx-%04d", i+1)
	}
	fan := func() int { return rows(fanOutContexts(b, sf.kubeconfig, contexts, "get", "deployments", "-A")...) }
	k := newFleetKubectl(b, d)
	want := fan()
	waitFor(b, 180*time.Second, "every context cached", func() (bool, string) {
		got := rows(k.mustB(b, "get", "deployments", "-A"))
		return got == want, fmt.Sprintf("%d rows through fleetcache, %d from the contexts", got, want)
	})
	var fc, fanT time.Duration
	for i := range b.N {
		runFC := func() {
			start := time.Now()
			if got := rows(k.mustB(b, "get", "deployments", "-A")); got != want {
				b.Fatalf("fleetcache: %d rows, want %d", got, want)
			}
			fc += time.Since(start)
		}
		runFan := func() {
			start := time.Now()
			if got := fan(); got != want {
				b.Fatalf("kubectl per context: %d rows, want %d", got, want)
			}
			fanT += time.Since(start)
		}
		if i%2 == 0 {
			runFC()
			runFan()
		} else {
			runFan()
			runFC()
		}
	}
	b.ReportMetric(float64(fc.Microseconds())/float64(b.N)/1000, "fleetcache-ms")
	b.ReportMetric(float64(fanT.Microseconds())/float64(b.N)/1000, "kubectl-parallel-ms")
	b.ReportMetric(float64(fanT)/float64(fc), "speedup")
	b.ReportMetric(float64(want), "rows")
	b.ReportMetric(float64(n), "contexts")
}

// fanOutContexts runs kubectl with args once per context of kubeconfig, all at once, and
// returns each output.
func fanOutContexts(t testing.TB, kubeconfig string, contexts []string, args ...string) []string {
	outs := make([]string, len(contexts))
	errs := make([]error, len(contexts))
	var wg sync.WaitGroup
	for i, c := range contexts {
		wg.Go(func() {
			cmd := exec.Command(filepath.Join(os.Getenv("FLEETCACHE_BIN"), "kubectl"), append([]string{"--kubeconfig", kubeconfig, "--context", c}, args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			outs[i] = string(out)
			// A resource some clusters lack (the Widget CRD) prints nothing there, as
			// in a shell loop.
			if err != nil && !strings.Contains(stderr.String(), "the server doesn't have a resource type") {
				errs[i] = fmt.Errorf("kubectl %v in %s: %v\n%s", args, c, err, stderr.String())
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return outs
}
