package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/memstat"
)

// memoryChildEnv makes the test binary a child of BenchmarkRealFleetMemoryVsInformers:
// it caches the contexts named in the variable ("OBJECTS KUBECONFIG CONTEXT..."), as the
// daemon does, waits until its index holds OBJECTS objects (what the typed informers
// held), prints a memstat.Report and exits, without starting a fleet of its own.
const memoryChildEnv = "FLEETCACHE_MEMORY_CHILD"

// memoryChild is the fleetcache side: a clusters.Fleet feeding an aggregator.Index,
// composed as cmd/fleetcache composes them, with the default resources and options.
func memoryChild(spec string) int {
	fields := strings.Fields(spec)
	want, err := strconv.Atoi(fields[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	args := fields[1:]
	filter := clusters.ContextFilter{Include: args[1:], Aliases: map[string]string{}}
	for _, c := range args[1:] {
		filter.Aliases[c] = strings.TrimSuffix(c, "-reader")
	}
	start := time.Now()
	ix := aggregator.New(nil, aggregator.Options{})
	f := clusters.NewFleet(clusters.KubeconfigSource{Paths: []string{args[0]}, Filter: filter}, clusters.FleetOptions{Cluster: clusters.Options{Handler: ix}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = f.Start(ctx) }()
	rep := memstat.Report{}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		synced, objects := 0, 0
		for _, s := range f.Status() {
			if s.InitialSyncTime != nil {
				synced++
			}
			objects += s.Objects()
		}
		// Events reach the index after the stores have synced: wait for all of them.
		if synced == len(args)-1 && objects >= want {
			rep.Objects = objects
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "%d of %d clusters synced, %d of %d objects\n", synced, len(args)-1, objects, want)
			return 1
		}
		time.Sleep(10 * time.Millisecond)
	}
	rep.SyncSeconds = time.Since(start).Seconds()
	memstat.Measure(&rep)
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return 1
	}
	return 0
}

// BenchmarkRealFleetMemoryVsInformers caches the real fleet (3 clusters ×
// FLEETCACHE_BENCH_PODS pods, fleetcache's 13 default resources) in three processes of
// their own, one after another in the same run, each reporting its heap and RSS once
// synced (internal/memstat):
//
//   - typed: examples/plaininformer, one typed SharedInformerFactory per context;
//   - stripped: the same with a transform dropping managedFields;
//   - fleetcache: a clusters.Fleet feeding an aggregator.Index (informer stores and the
//     unified index), as the daemon composes them.
//
// Goals (#17): fleetcache's heap ≤ 0.25× typed and ≤ 0.35× stripped, RSS ≤ 0.5× typed.
func BenchmarkRealFleetMemoryVsInformers(b *testing.B) {
	startDaemon(b)
	seedBig(b, servingPods(b))
	dir := b.TempDir()
	plain := filepath.Join(dir, "plaininformer")
	if out, err := exec.Command("go", "build", "-o", plain, "../examples/plaininformer").CombinedOutput(); err != nil {
		b.Fatalf("build plaininformer: %v\n%s", err, out)
	}
	var contexts []string
	for _, c := range fleet.Clusters {
		contexts = append(contexts, c.Name+"-reader")
	}
	run := func(name string, cmd *exec.Cmd) memstat.Report {
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("%s: %v\n%s", name, err, tail(stderr.String(), 2000))
		}
		var r memstat.Report
		if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
			b.Fatalf("%s: %v: %q", name, err, stdout.String())
		}
		return r
	}
	mib := func(n uint64) float64 { return float64(n) / (1 << 20) }
	for range b.N {
		typed := run("typed", exec.Command(plain, append([]string{fleet.Kubeconfig}, contexts...)...))
		stripped := run("stripped", exec.Command(plain, append([]string{"-strip-managed-fields", fleet.Kubeconfig}, contexts...)...))
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), fmt.Sprintf("%s=%d %s %s", memoryChildEnv, typed.Objects, fleet.Kubeconfig, strings.Join(contexts, " ")))
		fc := run("fleetcache", child)
		if fc.Objects != typed.Objects || stripped.Objects != typed.Objects {
			b.Fatalf("objects differ: fleetcache %d, typed %d, stripped %d", fc.Objects, typed.Objects, stripped.Objects)
		}
		b.ReportMetric(float64(fc.Objects), "objects")
		b.ReportMetric(mib(typed.HeapInuseBytes), "typed-heap-MiB")
		b.ReportMetric(mib(stripped.HeapInuseBytes), "stripped-heap-MiB")
		b.ReportMetric(mib(fc.HeapInuseBytes), "fleetcache-heap-MiB")
		b.ReportMetric(float64(fc.HeapInuseBytes)/float64(typed.HeapInuseBytes), "heap/typed")
		b.ReportMetric(float64(fc.HeapInuseBytes)/float64(stripped.HeapInuseBytes), "heap/stripped")
		b.ReportMetric(mib(typed.RSSBytes), "typed-RSS-MiB")
		b.ReportMetric(mib(stripped.RSSBytes), "stripped-RSS-MiB")
		b.ReportMetric(mib(fc.RSSBytes), "fleetcache-RSS-MiB")
		b.ReportMetric(float64(fc.RSSBytes)/float64(typed.RSSBytes), "RSS/typed")
		b.ReportMetric(mib(typed.PeakRSSBytes), "typed-peak-RSS-MiB")
		b.ReportMetric(mib(fc.PeakRSSBytes), "fleetcache-peak-RSS-MiB")
		b.ReportMetric(float64(fc.HeapAllocBytes)/float64(fc.Objects), "fleetcache-live-B/obj")
		b.ReportMetric(float64(typed.HeapAllocBytes)/float64(typed.Objects), "typed-live-B/obj")
	}
}

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
