package clusters

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Rediscovery asks the apiserver every RediscoveryInterval what it serves, and what it
// serves rarely changes. The aggregated discovery documents (/api and /apis, every group
// and resource at once) carry an ETag; a round first asks for each with If-None-Match,
// and only when one changed downloads and decodes them again (tens of KiB of JSON per
// cluster, which was most of an idle fleet's discovery CPU). Legacy discovery (an
// apiserver without aggregated discovery) has no such validators and is read whole.

// discoveryValidators are the ETags of the aggregated discovery documents the cluster
// last downloaded, with the Accept header they were asked for with.
type discoveryValidators struct {
	mu   sync.Mutex
	docs map[string]docValidator // by URL
}

type docValidator struct{ accept, etag string }

// discoveryTransport counts the discovery client's requests and records validators.
type discoveryTransport struct {
	http.RoundTripper
	n *atomic.Uint64
	v *discoveryValidators
}

func (t discoveryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.n.Add(1)
	resp, err := t.RoundTripper.RoundTrip(req)
	if err == nil && req.Method == http.MethodGet && req.Header.Get("If-None-Match") == "" {
		t.v.record(req, resp)
	}
	return resp, err
}

// isRoot: the request is for /api or /apis (under whatever path prefix the server has).
func isRoot(req *http.Request) bool {
	p := strings.TrimSuffix(req.URL.Path, "/")
	return strings.HasSuffix(p, "/api") || strings.HasSuffix(p, "/apis")
}

func (v *discoveryValidators) record(req *http.Request, resp *http.Response) {
	if !isRoot(req) {
		return
	}
	key := req.URL.String()
	etag := resp.Header.Get("ETag")
	// Only an aggregated document holds every resource; a legacy /apis lists groups only.
	aggregated := strings.Contains(resp.Header.Get("Content-Type"), "g=apidiscovery.k8s.io")
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.docs == nil {
		v.docs = map[string]docValidator{}
	}
	if resp.StatusCode == http.StatusOK && etag != "" && aggregated {
		v.docs[key] = docValidator{accept: req.Header.Get("Accept"), etag: etag}
	} else {
		delete(v.docs, key)
	}
}

// unchanged reports whether both documents are what they were when last downloaded:
// each answers If-None-Match with 304 Not Modified. False when they were not both
// recorded, and on any doubt (an error, another status).
func (v *discoveryValidators) unchanged(ctx context.Context, client *http.Client) bool {
	v.mu.Lock()
	docs := make(map[string]docValidator, len(v.docs))
	for k, d := range v.docs {
		docs[k] = d
	}
	v.mu.Unlock()
	if len(docs) != 2 {
		return false
	}
	for url, d := range docs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		req.Header.Set("Accept", d.accept)
		req.Header.Set("If-None-Match", d.etag)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			return false
		}
	}
	return true
}
