// Package kubeapi serves the Kubernetes API's read paths from fleetcache's index, so that
// kubectl and other Kubernetes clients can read the fleet:
//
//	/clusters/{cluster}/...   one cluster, as if it were its apiserver
//	/fleet/...                every cluster at once
//
// It serves discovery (/api, /apis, /api/v1, /apis/{group}/{version}, /version) for the
// cached resources, list, get and watch with labelSelector, fieldSelector, limit and
// continue, and server-side Tables (Accept: application/json;as=Table;v=v1;g=meta.k8s.io)
// whose first column is CLUSTER, then the columns kube-apiserver prints (internal/wire).
// Lists are streamed; a Table list is answered whole, whatever its limit (see
// tablesWhole). Objects carry their cluster in the annotation
// fleetcache.io/cluster. Every write is refused with 405 and a Status that says the API
// is read-only.
//
// resourceVersion: a list's metadata.resourceVersion is an opaque per-cluster vector (an
// aggregator.Cursor); a watch from it delivers every later change. resourceVersion "" or
// "0" on a watch starts now; on a list it is ignored (answers come from memory).
package kubeapi
