// Package wire encodes what the HTTP faces send: objects as JSON tagged with their
// cluster, and server-side Tables. Both the /api/v1 JSON API and the Kubernetes API
// (internal/kubeapi) stream through it, so that a fleet-wide answer is written as it is
// encoded, never built whole in memory.
//
// Its parts:
//   - Stream: encodes items on every core in order-preserving batches and writes them as
//     they are ready (the writer, not the encoders, decides where a response ends).
//   - AppendObject: one object as JSON, with the annotation fleetcache.io/cluster.
//   - Table: a resource's table columns (CLUSTER, NAME, the kind's own, AGE) and rows
//     from the cells computed when the object was cached (clusters.Object.AppendCells);
//     custom resources' printer columns are evaluated per request on the decoded object.
//
// The JSON written by hand here (Table rows, strings) is byte-for-byte what encoding/json
// writes for the same values; the tests check it against encoding/json.
package wire
