package sharding

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

// routedHeader marks a request one replica passed to another: it is answered there,
// never passed on again (two replicas briefly disagreeing on an owner cannot loop).
const routedHeader = "X-Fleetcache-Routed"

// cluster passes a Kubernetes API request for one cluster (/clusters/<name>/...) to a
// replica that caches it, streams (watches) included, with the caller's signed identity
// in place of the caller's credentials.
func (rt *Router) cluster(w http.ResponseWriter, r *http.Request, local http.Handler) {
	name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/clusters/"), "/")
	r2 := cloneRequest(r, r.URL.Path, func(v url.Values) { v.Set("cluster", name) })
	cands, _ := rt.candidates(r2)
	owners := cands[name]
	if len(owners) == 0 || owners[0].Identity == rt.Source.Owner.Identity() {
		local.ServeHTTP(w, r) // this replica's, or unknown here: the local answer says so
		return
	}
	target, err := url.Parse(owners[0].Address)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "ReplicaUnavailable", fmt.Sprintf("cluster %s is cached by replica %s at %q: %v", name, owners[0].Identity, owners[0].Address, err))
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Built from validated parts: the path as the guard checked and decoded it
			// (request.CheckPath), re-encoded by net/url; the query as the peer's own
			// face will parse and check it; of the caller's headers only those that say
			// how to answer, never its credentials.
			pr.SetURL(target)
			pr.Out.URL.Path, pr.Out.URL.RawPath = singleJoiningSlash(target.Path, pr.In.URL.Path), ""
			pr.Out.Header = http.Header{}
			for _, k := range forwardedHeaders {
				if v := pr.In.Header.Values(k); len(v) > 0 {
					pr.Out.Header[k] = v
				}
			}
			pr.Out.Header.Set(routedHeader, rt.Source.Owner.Identity())
			rt.authorize(pr.Out, pr.In, owners[0])
		},
		FlushInterval: -1, // watches: every event at once
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", fmt.Sprintf("cluster %s is cached by replica %s, which did not answer: %v", name, owners[0].Identity, err))
		},
	}
	proxy.ServeHTTP(w, r)
}

// forwardedHeaders are the caller's headers a routed Kubernetes API request keeps: the
// encoding asked for and cache validators. Everything else (credentials included) stays.
var forwardedHeaders = []string{"Accept", "User-Agent", "If-None-Match", "If-Modified-Since"}

func singleJoiningSlash(a, b string) string {
	return strings.TrimSuffix(a, "/") + "/" + strings.TrimPrefix(b, "/")
}

// resourceRequest reports whether a Kubernetes API path (under /fleet) names a resource,
// rather than a discovery document: /api/v1/pods, /apis/apps/v1/namespaces/x/deployments,
// but not /api, /api/v1, /apis/apps/v1, /version or /openapi/v3.
func resourceRequest(path string) bool {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) > 0 && parts[0] == "api":
		return len(parts) >= 3
	case len(parts) > 0 && parts[0] == "apis":
		return len(parts) >= 4
	}
	return false
}
