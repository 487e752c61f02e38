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
	if _, ok := kubePath(r.URL.Path); !ok {
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
