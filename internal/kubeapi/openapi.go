package kubeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/kube-openapi/pkg/handler3"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/request"
)

// schemaSource reads a cluster's OpenAPI v3 documents (clusters.Fleet does).
type schemaSource interface {
	OpenAPIV3(ctx context.Context, cluster, path, rawQuery, accept string) (*http.Response, error)
}

// openAPIV3 answers /openapi/v3[/<group version>] (what kubectl explain reads) from a
// cluster's own apiserver: the named cluster's, or on the fleet path the first Synced
// cluster's (by name) that the caller may see. Schemas are not cached: each request is
// passed on. The root document's links are rewritten under prefix, so that the client
// follows them here.
func (h *Handler) openAPIV3(w http.ResponseWriter, r *http.Request, cluster, prefix, path string) {
	src, ok := h.Fleet.(schemaSource)
	if !ok {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{}, "/openapi/v3"))
		return
	}
	// Checked here for a clear answer, and again where the request leaves the process.
	if _, err := clusters.OpenAPIPath(path); err != nil {
		writeStatus(w, &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
			Message: fmt.Sprintf("/openapi/v3/%s: %v", path, err),
		}})
		return
	}
	if cluster == "" {
		sc := request.Scope(r)
		for _, name := range h.Fleet.Names() {
			if f, ok := h.Fleet.Freshness(name, ""); ok && f.Phase == clusters.PhaseSynced && (sc == nil || sc.SeesCluster(name)) {
				cluster = name
				break
			}
		}
		if cluster == "" {
			writeStatus(w, apierrors.NewServiceUnavailable("no Synced cluster to read the OpenAPI schema from"))
			return
		}
	}
	resp, err := src.OpenAPIV3(r.Context(), cluster, path, r.URL.RawQuery, r.Header.Get("Accept"))
	if err != nil {
		writeStatus(w, apierrors.NewServiceUnavailable(fmt.Sprintf("the OpenAPI schema of cluster %s: %v", cluster, err)))
		return
	}
	defer resp.Body.Close()
	for _, k := range []string{"Content-Type", "Cache-Control", "Expires", "Etag", "Last-Modified", "Vary"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.Header().Set("X-Fleetcache-Schema-Cluster", cluster)
	if path != "" || resp.StatusCode != http.StatusOK {
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	var root handler3.OpenAPIV3Discovery
	if err := json.NewDecoder(resp.Body).Decode(&root); err != nil {
		writeStatus(w, apierrors.NewInternalError(fmt.Errorf("the OpenAPI root of cluster %s: %w", cluster, err)))
		return
	}
	for gv, p := range root.Paths {
		p.ServerRelativeURL = prefix + "/" + strings.TrimPrefix(p.ServerRelativeURL, "/")
		root.Paths[gv] = p
	}
	w.Header().Del("Etag") // the rewritten document is not the apiserver's
	writeJSON(w, root)
}
