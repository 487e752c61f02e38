// Package aggregator is fleetcache's unified multi-cluster index: one ordered, indexed
// view over every cluster's cache, and the queries over it (Get, List, Count, Watch).
//
// Parts:
//   - Index (index.go): receives every object change from the clusters package
//     (clusters.EventHandler) and keeps, per resource and cluster, a B-tree of entries
//     ordered by namespace/name plus inverted indexes by label, owner and the resources'
//     extra indexes (clusters.IndexSpec). Entries point at the clusters' cached objects:
//     there is one copy of each object in memory.
//   - labels (labels.go): entries carry their labels flattened and interned, and their
//     namespace interned, so that a scan no index answers never touches the objects.
//   - Query and List/Count (query.go): selection by cluster glob, namespace, label and
//     field selectors (apimachinery's parsers and matchers), stable order, paging.
//   - tokens (token.go): continue tokens and watch cursors.
//   - Watch (watch.go): cluster-tagged event streams, resumable from a cursor.
//
// Consistency: every cluster's part of an answer is a consistent snapshot of that
// cluster's index at one moment; different clusters are read one after another. The index
// follows the clusters' informers with the informers' own lag, so answers carry each
// cluster's freshness (phase and last event time).
//
// Objects handed out (Item.Object) are shared with the cache and every other reader:
// never modify one. Decode returns a private copy.
package aggregator
