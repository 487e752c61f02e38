package request

import (
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
)

// IsWatch tells a watch stream from a request, from its URL alone: /api/v1/watch, or a
// Kubernetes API request whose watch parameter is true as kube-apiserver decodes it
// (apimachinery's conversion: anything but "0" and "false", so watch=1 and watch=true),
// on a collection or on one named object. The in-flight and watch caps, the HTTP metrics
// and the Kubernetes API's routing all ask this.
func IsWatch(r *http.Request) bool {
	if r.URL.Path == "/api/v1/watch" {
		return true
	}
	path, ok := kubePath(r.URL.Path)
	if !ok || !canWatch(path) {
		return false
	}
	v, ok := r.URL.Query()["watch"]
	if !ok {
		return false
	}
	var watch bool
	_ = runtime.Convert_Slice_string_To_bool(&v, &watch, nil)
	return watch
}

// canWatch reports whether a Kubernetes API path names what can be watched: a resource
// (all namespaces or one) or one object of it, never discovery, a subresource, OpenAPI
// or anything else. Only those are streams, exempt from the in-flight cap and the
// request timeout; ?watch=1 on any other path is an ordinary request.
func canWatch(path string) bool {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:] // namespaces/<ns>/<resource>[/<name>]
	}
	return len(parts) == 1 || len(parts) == 2
}

// kubePath returns a Kubernetes API path below its face's prefix (/fleet or
// /clusters/{name}); false for any other path.
func kubePath(path string) (string, bool) {
	switch {
	case strings.HasPrefix(path, "/fleet/"):
		return path[len("/fleet"):], true
	case strings.HasPrefix(path, "/clusters/"):
		if _, rest, ok := strings.Cut(path[len("/clusters/"):], "/"); ok {
			return "/" + rest, true
		}
	}
	return "", false
}
