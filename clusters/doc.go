// Package clusters caches Kubernetes clusters: for each kubeconfig context (or the
// cluster fleetcache runs in), one client, discovery, one shared informer per resource,
// and the cluster's status, including how fresh its cache provably is.
//
// Parts, one concern per file:
//   - source.go, kubeconfig.go, incluster.go: where clusters come from (Source, Target).
//     A FileSource is reloaded when its files change.
//   - fleet.go: the registry (Fleet). One Cluster per target, each with its own context;
//     a target is restarted only when its connection settings change.
//   - options.go: what every cluster is told (Options), defaults in one place with
//     their reasons.
//   - cluster.go: one cluster's life (Start, stop) and its phase, status and freshness
//     view.
//   - discovery.go: resolving the configured resources through discovery and a
//     RESTMapper, and starting or stopping informers as resources appear or go.
//   - informer.go, resource.go: one informer per resource (and namespace): an observed
//     list/watch (timeouts, the fleet-wide list cap, counters) and the compacting
//     transform; the resource's facts and phase.
//   - probe.go, freshness.go: freshness probes and what they prove (read freshness.go
//     first: it states what "Synced" and the staleness bound mean).
//   - object.go, indexes.go, handler.go: the stored object, the index values extracted
//     at ingest, and the EventHandler the aggregator implements.
//   - body.go, intern.go: how the stored object stays small: its encoded form compressed
//     with a dictionary trained per resource, and what objects alike share (namespace,
//     labels, owners; index values).
//   - status.go, counters.go: phases, conditions, status types; call counters and
//     histograms for metrics.
//
// Informers are built one by one, not through a SharedInformerFactory: a resource can go
// away on its own (its CRD deleted) and come back with another version, and a factory
// can neither stop one informer nor forget one. Each informer is still the single shared
// informer of its resource in its cluster: it lists once, then watches, and every
// consumer reads its events.
//
// Consistency: each resource's cache follows the apiserver independently, with the lag
// its staleness bound states; Synced means that bound has been proven since the last
// failure. Objects handed out are shared and immutable; Object.Decode returns a copy.
package clusters
