package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// BenchmarkShardedList compares a whole-fleet list of pods through one of three sharded
// replicas (two thirds of the clusters are other replicas') with the same list from one
// daemon that caches every context, both over shardContexts contexts of the real fleet
// seeded with FLEETCACHE_BENCH_PODS pods per apiserver (default 1,000: 30 contexts ×
// 1,000 pods). Pages are read as curl would, as bytes, following continue tokens. It also
// reports each one's heap: a replica should hold about a third of the single daemon's.
func BenchmarkShardedList(b *testing.B) {
	pods := 1000
	if s := servingPods(b); s != 5000 {
		pods = s
	}
	seedBig(b, pods)
	sf := newShardFleet(b, shardContexts, "[{name: pods}]")
	single := sf.start(b, "", 0)
	var rs []shardReplica
	for range 3 {
		rs = append(rs, sf.start(b, "bench", 1))
	}
	want := shardContexts * len(kubectlSetParallel(b, "pods", "-A")) / len(fleet.Clusters)
	for _, r := range append([]shardReplica{single}, rs...) {
		testfleet.Eventually(b, 300*time.Second, r.id+" holds every pod", func() (bool, string) {
			n := countAll(b, r)
			return n == want, fmt.Sprintf("%d of %d", n, want)
		})
	}
	// Memory before any list: what holding the caches costs (a replica also holds
	// nothing of the others' clusters). The replicas started one after the other, so the
	// first ones cached clusters that then moved: a moved cluster's last events (which
	// hold its objects) are kept a minute for watches to resume through
	// (aggregator.Options.RemovedRetention), then freed. Measured once that has passed.
	time.Sleep(70 * time.Second)
	hs, rss := metricValue(b, single, "go_gc_heap_live_bytes"), metricValue(b, single, "process_resident_memory_bytes")
	var hr, rr float64
	for _, r := range rs {
		hr += metricValue(b, r, "go_gc_heap_live_bytes") / 3
		rr += metricValue(b, r, "process_resident_memory_bytes") / 3
	}
	var buf bytes.Buffer
	type read func(b *testing.B, r shardReplica) int
	pages := func(limit int) read {
		q := url.Values{"resource": {"pods"}, "limit": {fmt.Sprint(limit)}}
		return func(b *testing.B, r shardReplica) int { return readPages(b, r, q, &buf) }
	}
	// The Kubernetes API on /fleet, as curl reads it (a whole list) and as kubectl prints it.
	fleetList := func(accept, marker string) read {
		return func(b *testing.B, r shardReplica) int { return readFleetList(b, r, accept, marker, &buf) }
	}
	kubectls := map[string]*fleetKubectl{}
	for _, r := range []shardReplica{single, rs[0]} {
		kubectls[r.id] = newFleetKubectl(b, &daemon{url: r.url, bin: sf.bin})
	}
	kubectl := func(b *testing.B, r shardReplica) int {
		out, stderr, err := kubectls[r.id].run("--server", r.url+"/fleet", "get", "pods", "-A", "--no-headers")
		if err != nil || stderr != "" {
			b.Fatalf("kubectl through %s: %v %s", r.id, err, stderr)
		}
		return bytes.Count([]byte(out), []byte("\n"))
	}
	for _, bc := range []struct {
		name string
		read read
	}{
		{"limit=500", pages(500)},
		{"limit=5000", pages(5000)},
		{"fleet-json", fleetList("application/json", `"fleetcache.io/cluster":`)},
		{"fleet-table", fleetList("application/json;as=Table;v=v1;g=meta.k8s.io", `{"cells":`)},
		{"fleet-kubectl", kubectl},
	} {
		var tSingle, tRouted time.Duration
		b.Run(bc.name, func(b *testing.B) {
			for range b.N {
				start := time.Now()
				if n := bc.read(b, single); n != want {
					b.Fatalf("single daemon: %d items, want %d", n, want)
				}
				tSingle += time.Since(start)
				start = time.Now()
				if n := bc.read(b, rs[0]); n != want {
					b.Fatalf("through %s: %d items, want %d", rs[0].id, n, want)
				}
				tRouted += time.Since(start)
			}
			b.ReportMetric(tSingle.Seconds()/float64(b.N), "single-s")
			b.ReportMetric(tRouted.Seconds()/float64(b.N), "routed-s")
			b.ReportMetric(tRouted.Seconds()/tSingle.Seconds(), "routed/single")
			b.ReportMetric(float64(want), "objects")
			b.ReportMetric(hs/(1<<20), "single-heap-MiB")
			b.ReportMetric(hr/(1<<20), "replica-heap-MiB")
			b.ReportMetric(rss/(1<<20), "single-rss-MiB")
			b.ReportMetric(rr/(1<<20), "replica-rss-MiB")
		})
	}
}

// readPages reads every page of a list as bytes, as curl would, and counts the items.
func readPages(b *testing.B, r shardReplica, q url.Values, buf *bytes.Buffer) int {
	q = maps.Clone(q)
	n := 0
	for {
		req, _ := http.NewRequest(http.MethodGet, r.url+"/api/v1/objects?"+q.Encode(), nil)
		// Count items by their opening bytes and take the token from the tail, as a
		// script would with jq's streaming mode: the client's own decoding is not what is
		// compared here.
		body := readAll(b, r, req, buf)
		items := bytes.Index(body, []byte(`"items":[`))
		if items < 0 {
			b.Fatalf("%s: no items in %s", r.id, body[:min(len(body), 300)])
		}
		n += bytes.Count(body[items:], []byte(`{"cluster":`))
		i := bytes.LastIndex(body, []byte(`,"continue":`))
		if i < 0 {
			return n
		}
		var cont string
		if err := json.Unmarshal(bytes.TrimSuffix(bytes.TrimSpace(body[i+len(`,"continue":`):]), []byte("}")), &cont); err != nil {
			b.Fatal(err)
		}
		q.Set("continue", cont)
	}
}

// readAll reads an answer into buf, as curl would.
func readAll(b *testing.B, r shardReplica, req *http.Request, buf *bytes.Buffer) []byte {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	buf.Reset()
	_, err = io.Copy(buf, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: HTTP %d %v %s", r.id, resp.StatusCode, err, buf.Bytes()[:min(buf.Len(), 300)])
	}
	return buf.Bytes()
}

// readFleetList reads a list from /fleet as bytes, following continue tokens (a list is
// cut at the response cap), and counts its items by marker.
func readFleetList(b *testing.B, r shardReplica, accept, marker string, buf *bytes.Buffer) int {
	n, cont := 0, ""
	for {
		req, _ := http.NewRequest(http.MethodGet, r.url+"/fleet/api/v1/pods?"+url.Values{"continue": {cont}}.Encode(), nil)
		req.Header.Set("Accept", accept)
		body := readAll(b, r, req, buf)
		n += bytes.Count(body, []byte(marker))
		// The list's metadata is its last member.
		i := bytes.LastIndex(body, []byte(`"metadata":{`))
		var meta struct {
			Continue string `json:"continue"`
		}
		if i < 0 || json.Unmarshal(bytes.TrimSuffix(bytes.TrimSpace(body[i+len(`"metadata":`):]), []byte("}")), &meta) != nil {
			b.Fatalf("%s: no list metadata at the end of %.300s", r.id, body[max(0, len(body)-300):])
		}
		if meta.Continue == "" {
			return n
		}
		cont = meta.Continue
	}
}

func countAll(b *testing.B, r shardReplica) int {
	resp, err := http.Get(r.url + "/api/v1/count?resource=pods")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var c struct {
		Total   int  `json:"total"`
		Partial bool `json:"partial"`
	}
	if json.NewDecoder(resp.Body).Decode(&c) != nil || c.Partial {
		return -1
	}
	return c.Total
}

func metricValue(b *testing.B, r shardReplica, name string) float64 {
	resp, err := http.Get(r.url + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var v float64
	for _, line := range bytes.Split(body, []byte("\n")) {
		if bytes.HasPrefix(line, []byte(name+" ")) {
			fmt.Sscan(string(line[len(name)+1:]), &v)
		}
	}
	return v
}
