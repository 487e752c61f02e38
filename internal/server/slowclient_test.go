package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/fixtures"
)

// TestStuckWatchClientIsDisconnected opens a watch and stops reading it: ingest must go
// on (every add returns) and the server must end the stream.
func TestStuckWatchClientIsDisconnected(t *testing.T) {
	ix := aggregator.New(nil, aggregator.Options{WatchBuffer: 16})
	c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		t.Fatal(err)
	}
	ref := &clusters.InformerRef{Cluster: "a", Resource: "pods", Kind: "Pod", APIVersion: "v1", Namespaced: true, Names: []string{"pods"}, ID: 1}
	add := func(i int) {
		p := fixtures.RealisticPod(i)
		p.Name = fmt.Sprintf("p-%06d", i)
		p.ManagedFields = nil
		o, err := c.Compact(p)
		if err != nil {
			t.Fatal(err)
		}
		ix.OnAdd(ref, o)
	}
	add(0)
	srv := httptest.NewServer(New(Options{Fleet: noFleet{}, Index: ix, Limits: Limits{StreamWriteTimeout: time.Second}}))
	defer srv.Close()

	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/watch?resource=pods HTTP/1.1\r\nHost: x\r\n\r\n")
	// The client reads nothing while 5000 fat events (about 40 MB) are ingested: more
	// than socket buffers and the watcher's buffer hold.
	done := make(chan struct{})
	go func() {
		for i := 1; i <= 5000; i++ {
			add(i)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("ingest blocked behind a client that does not read")
	}
	time.Sleep(2 * time.Second) // past the stream write timeout (1s here)
	// The server gave up on the client: its response ends (with an ERROR event when the
	// client could still be written to) instead of staying open.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the stream of a client that stopped reading is still open")
	}
	if !strings.Contains(string(body), `"type":"ERROR"`) {
		t.Errorf("the stream ended without saying why (%d bytes)", len(body))
	}
	var pods int
	if res, err := ix.Count(context.Background(), aggregator.Query{Resource: "pods"}, nil); err == nil {
		pods = res.Total
	}
	if pods != 5001 {
		t.Errorf("index holds %d pods, want 5001", pods)
	}
}
