// Package kubeapi serves the Kubernetes API's read paths from fleetcache's index, so that
// kubectl and client-go programs (informers included) can read the fleet:
//
//	/clusters/{cluster}/...   one cluster, as if it were its apiserver
//	/fleet/...                every cluster at once
//
// It parses the Kubernetes API's URL shapes and encodes as kube-apiserver does; every
// policy between the two (scopes, the Secret policy, page sizes and the response cap,
// list admission, the error mapping, watch detection, the stream write timeout and ending
// streams on shutdown) is internal/request's pipeline, shared with /api/v1.
//
// Parts:
//   - kubeapi.go: routing, list and get, the read-only 405s.
//   - discovery.go: /api, /apis, /api/v1, /apis/{group}[/{version}] and aggregated
//     discovery (apidiscovery.k8s.io/v2), listing exactly the cached resources.
//   - version.go: list and watch options as kube-apiserver decodes and validates them,
//     and resourceVersion semantics.
//   - watchlist.go: watches, including the watch-list protocol (sendInitialEvents) and
//     bookmarks.
//   - encode.go: content negotiation; protobuf for built-in types, JSON otherwise.
//   - table.go, stream.go: server-side Tables (Accept: application/json;as=Table;v=v1;
//     g=meta.k8s.io) whose first column is CLUSTER, then the columns kube-apiserver
//     prints (internal/wire); lists are streamed. Table and JSON lists are answered
//     whole, whatever their limit, up to the response cap (see Handler.object);
//     protobuf lists keep their pages.
//
// Objects carry their cluster in the annotation fleetcache.io/cluster. Every write is
// refused with 405 and a Status that says the API is read-only.
//
// resourceVersion: a list's metadata.resourceVersion is "<epoch>.<cursor>", the
// aggregator's per-cluster position prefixed by a number random per process; a watch from
// it delivers every later change. One from another process (before a restart) or older
// than the retained history is 410 Expired, and clients relist. "" and "0" are the
// current state (a watch from them starts with it, as kube-apiserver's does).
package kubeapi
