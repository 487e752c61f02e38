// Package clusters caches Kubernetes clusters: for each kubeconfig context (or the
// cluster fleetcache runs in), one client, discovery, one shared informer factory with an
// informer per resource, and the cluster's status, including how fresh its cache provably is.
//
// Parts, one concern per file:
//   - source.go, kubeconfig.go, incluster.go: where clusters come from (Source, Target).
//     A FileSource is reloaded when its files change.
//   - fleet.go: the registry (Fleet). One Cluster per target, each with its own context;
//     a target is restarted only when its connection settings change.
//   - options.go: what every cluster is told (Options), defaults in one place with
//     their reasons.
//   - cluster.go: one cluster's life (Start, stop) and its phase, status and freshness
//     view; summary.go: the cluster-level summary (no resource status built).
//   - discovery.go: resolving the configured resources through discovery and a
//     RESTMapper, and starting or stopping informers as resources appear or go;
//     revalidate.go: rediscovery asks with ETags and reads the documents only when they
//     changed.
//   - informer.go, resource.go: one informer per resource (and namespace): an observed
//     list/watch (timeouts, the fleet-wide list cap, counters; watch streams observed in
//     client-go's own decoder) and the compacting transform; the resource's facts and
//     phase.
//   - reflectorinformer.go: the informer itself, a cache.SharedIndexInformer made of a
//     client-go Reflector and a store that hands every change to the one consumer.
//   - budget.go: the fleet-wide request budget that stretches probe intervals as the
//     fleet grows.
//   - probe.go, freshness.go: freshness probes and what they prove (read freshness.go
//     first: it states what "Synced" and the staleness bound mean).
//   - object.go, indexes.go, handler.go: the stored object, the index values extracted
//     at ingest, and the EventHandler the aggregator implements.
//   - body.go, intern.go: how the stored object stays small: its encoded form compressed
//     with a dictionary trained per resource, and what objects alike share (namespace,
//     labels, owners; index values).
//   - fields.go: reading one field of a stored object (a field selector or group-by no
//     index answers) from its bytes, without decoding it (FieldReader), with decoding
//     as the fallback and the reference it is tested against.
//   - status.go, counters.go: phases, conditions, status types; call counters and
//     histograms for metrics.
//   - cells.go: the table cells of built-in kinds, computed once when an object is
//     stored, as the apiserver's own table printer prints them.
//   - openapi.go: the one request a caller's words reach a member apiserver through
//     (NewOpenAPIRequest: an OpenAPI v3 document, built from validated parts only).
//
// Each context has one shared informer factory (informers.SharedInformerFactory) per
// namespace scope; a built-in resource's informer is registered through the factory's
// construction hook (InformerFor), which the factory then starts and waits for. The
// informer is fleetcache's reflectorInformer, with the observed list/watch and the
// compacting transform (SetTransform) plugged in: it has one consumer, the unified
// index, and feeds it from the reflector's goroutine, without the shared informer's
// DeltaFIFO, controller, processor and listener goroutines (4 goroutines per resource
// instead of about 10). Custom resources get the same informer directly: the dynamic
// informer factory (dynamicinformer) has no construction hook. A factory cannot stop or
// forget one informer, so each informer can be stopped on its own (its CRD deleted), and
// a resource that comes back gets a new factory.
//
// Consistency: each resource's cache follows the apiserver independently, with the lag
// its staleness bound states; Synced means that bound has been proven since the last
// failure. Objects handed out are shared and immutable; Object.Decode returns a copy.
package clusters
