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
//   - scans (scan.go): a query that no index narrows visits a snapshot of each shard
//     without its lock, reads fields no index holds from the objects' stored bytes
//     (clusters.FieldReader), and stops within a chunk of objects once its context ends.
//   - tokens (token.go): continue tokens and watch cursors.
//   - Watch (watch.go): cluster-tagged event streams, resumable from a cursor.
//
// Consistency: every cluster's part of an answer is a consistent snapshot of that
// cluster's index at one moment; different clusters are read one after another. The index
// follows the clusters' informers with the informers' own lag, so answers carry each
// cluster's freshness (phase and last event time).
//
// Locks, in the order they are taken: Index.mu, resourceIndex.mu, shard.mu,
// shard.cloneMu, resourceIndex.wmu. Ingest (an informer storing a change) holds its
// shard's mu for writing; readers hold it for reading only for bounded work (a get, the
// maintained counters, a view for a scan: a copy-on-write clone of the shard's tree, or
// the entries an index selects), never while they evaluate objects, so ingest never
// waits for a query and a query never waits behind another query's scan. Entries and the
// objects they point at are never modified once stored, which is what lets a scan read
// them without the lock. Ingest hands events to watchers without blocking (a watcher
// that falls behind is ended).
//
// Queries take a context: a List or Count that scans, and a watch's initial events,
// stop within a chunk of objects (scanChunk) once it ends, and return its error.
//
// Objects handed out (Item.Object) are shared with the cache and every other reader:
// never modify one. Decode returns a private copy.
package aggregator
