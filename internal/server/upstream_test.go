package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/fixtures"
	"github.com/fleetcache/fleetcache/internal/kubeapi"
)

// memberBase is where the recording fleet's clusters live: a path prefix, as behind a
// proxy, so that an escape above /openapi would show.
var memberBase = &url.URL{Scheme: "https", Host: "member.example:6443", Path: "/prefix"}

// allowedUpstream is every URL fleetcache may send to a member apiserver on behalf of an
// OpenAPI request: the root or one group version's document, an optional hex hash.
var allowedUpstream = regexp.MustCompile(`^https://member\.example:6443/prefix/openapi/v3(/api/[a-z0-9]([-a-z0-9]*[a-z0-9])?|/apis/[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?)?(\?hash=[0-9A-Fa-f]+)?$`)

// recordingFleet is a synced fleet whose OpenAPI documents are asked of a member that
// only records: the URL each request would have left with, built by the code that
// builds the real ones (clusters.NewOpenAPIRequest).
type recordingFleet struct {
	*syncedFleet
	mu   sync.Mutex
	sent []string
}

func (f *recordingFleet) OpenAPIV3(ctx context.Context, cluster, path, rawQuery, accept string) (*http.Response, error) {
	req, err := clusters.NewOpenAPIRequest(ctx, memberBase, path, rawQuery, accept)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.sent = append(f.sent, req.URL.String())
	f.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{"paths":{}}`))}, nil
}

func (f *recordingFleet) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.sent
	f.sent = nil
	return out
}

func recordingServer() (*recordingFleet, http.Handler) {
	rf := &recordingFleet{syncedFleet: newSyncedFleet()}
	ix := aggregator.New(nil, aggregator.Options{})
	return rf, New(Options{Fleet: rf, Index: ix, KubeAPI: &kubeapi.Handler{Index: ix, Fleet: rf}})
}

// rawGet sends target as the request line says it, unnormalised (curl --path-as-is),
// to h through a real listener and returns the status code.
func rawGet(t testing.TB, srv *httptest.Server, target string) int {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: fleetcache\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %q: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The attack of #24 and its cousins, on every face that passes a path on: no request
// leaves for a member apiserver outside the allowed documents; every crafted path is
// refused with a 4xx (a query that only carries junk is answered, its junk dropped).
func TestCraftedPathsNeverLeaveTheAllowedDocuments(t *testing.T) {
	rf, h := recordingServer()
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, prefix := range []string{"/fleet/", "/clusters/cluster-00/"} {
		for _, s := range fixtures.CraftedOpenAPIPaths {
			target := prefix + s
			code := rawGet(t, srv, target)
			sent := rf.take()
			for _, u := range sent {
				if !allowedUpstream.MatchString(u) {
					t.Errorf("GET %s sent %s to the member", target, u)
				}
			}
			if code < 400 || code > 499 {
				if len(sent) == 1 && strings.Contains(s, "?") {
					continue // the document itself, with the query's junk dropped
				}
				t.Errorf("GET %s: %d, want a 4xx", target, code)
			}
		}
	}
	// The documents kubectl explain reads still pass.
	for _, target := range []string{"/fleet/openapi/v3", "/fleet/openapi/v3/api/v1?hash=0A1b", "/clusters/cluster-00/openapi/v3/apis/apps/v1"} {
		if code := rawGet(t, srv, target); code != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", target, code)
		}
		if sent := rf.take(); len(sent) != 1 || !allowedUpstream.MatchString(sent[0]) {
			t.Errorf("GET %s sent %v, want one allowed document", target, sent)
		}
	}
	if sent := rf.take(); len(sent) != 0 {
		t.Errorf("left over: %v", sent)
	}
}

// Every route refuses a path that could mean two things, on both faces, before any
// handler reads it; a URL past 16 KiB is 414.
func TestAmbiguousPathsAreRefusedOnEveryRoute(t *testing.T) {
	_, h := recordingServer()
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, target := range []string{
		"/api/v1/objects/%2e%2e/pods/default/x",
		"/api/v1/objects/cluster-00/pods/..%2f..%2f/x",
		"/api/v1/%2e%2e/metrics",
		"/fleet/api/v1/namespaces/%2e%2e/pods",
		"/clusters/cluster-00/api/v1/namespaces/default/pods/%2e%2e",
		"/clusters/%2e%2e/api/v1/pods",
		"/clusters/cluster-00/api/v1/pods;x",
		"/fleet/api/v1/p%6fds",
		"/readyz/../metrics",
		"/metrics%2f..",
		"/api/v1/clusters/%ff",
	} {
		if code := rawGet(t, srv, target); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", target, code)
		}
	}
	if code := rawGet(t, srv, "/fleet/api/v1/pods?labelSelector="+strings.Repeat("a", 17<<10)); code != http.StatusRequestURITooLong {
		t.Errorf("a 17 KiB URL: %d, want 414", code)
	}
	// A cluster name's own characters may still be encoded.
	if code := rawGet(t, srv, "/clusters/no%20such%3Acluster/api/v1/pods"); code != http.StatusNotFound {
		t.Errorf("an encoded space and colon in a cluster name: %d, want 404 (no such cluster)", code)
	}
}

// FuzzNoUpstreamOutsideTheAllowedSet: whatever path and query a caller sends on either
// face, a request that leaves for a member apiserver is one of the allowed documents.
func FuzzNoUpstreamOutsideTheAllowedSet(f *testing.F) {
	for _, s := range fixtures.CraftedOpenAPIPaths {
		f.Add("/fleet/" + s)
		f.Add("/clusters/cluster-00/" + s)
	}
	f.Add("/fleet/openapi/v3/apis/apps/v1?hash=00")
	rf, h := recordingServer()
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // a request line the HTTP server itself would refuse
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL, r.RequestURI = u, target
		h.ServeHTTP(httptest.NewRecorder(), r)
		for _, sent := range rf.take() {
			if !allowedUpstream.MatchString(sent) {
				t.Errorf("GET %q sent %s to the member", target, sent)
			}
		}
	})
}
