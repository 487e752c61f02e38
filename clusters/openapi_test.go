package clusters

import (
	"context"
	"net/url"
	"testing"
)

// The one builder of requests to a member apiserver on a caller's behalf: only the
// allowed documents, under the server URL's own path, whatever the caller sends.
func TestNewOpenAPIRequest(t *testing.T) {
	for _, tc := range []struct {
		base, path, query, accept string
		want, wantAccept          string // "" want: refused
	}{
		{"https://k:6443", "", "", "", "https://k:6443/openapi/v3", "application/json"},
		{"https://k:6443/", "api/v1", "hash=0aF9", "application/com.github.proto-openapi.spec.v3.v1.0+protobuf", "https://k:6443/openapi/v3/api/v1?hash=0aF9", "application/com.github.proto-openapi.spec.v3.v1.0+protobuf"},
		{"https://proxy/prefix", "apis/apps/v1", "hash=zz&watch=1", "text/html, application/json;q=0.9", "https://proxy/prefix/openapi/v3/apis/apps/v1", "application/json"},
		{"https://k:6443", "apis/example.com/v1beta1", "timeout=1s", "*/*", "https://k:6443/openapi/v3/apis/example.com/v1beta1", "*/*"},
		{"https://k:6443", "../../api/v1/secrets", "", "", "", ""},
		{"https://k:6443", "api/../../metrics", "", "", "", ""},
		{"https://k:6443", "api/v1/..", "", "", "", ""},
		{"https://k:6443", "apis//v1", "", "", "", ""},
		{"https://k:6443", "apis/apps/v1/extra", "", "", "", ""},
		{"https://k:6443", "api/v1%2f..", "", "", "", ""},
		{"https://k:6443", "api/V1", "", "", "", ""},
		{"https://k:6443", "/api/v1", "", "", "", ""},
		{"https://k:6443", "api/v1?x", "", "", "", ""},
	} {
		base, _ := url.Parse(tc.base)
		req, err := NewOpenAPIRequest(context.Background(), base, tc.path, tc.query, tc.accept)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%q: sent %s, want refused", tc.path, req.URL)
		case tc.want != "" && err != nil:
			t.Errorf("%q: %v, want %s", tc.path, err, tc.want)
		case tc.want != "" && (req.URL.String() != tc.want || req.Header.Get("Accept") != tc.wantAccept):
			t.Errorf("%q: %s (Accept %q), want %s (Accept %q)", tc.path, req.URL, req.Header.Get("Accept"), tc.want, tc.wantAccept)
		}
	}
}
