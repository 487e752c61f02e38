package aggregator

import (
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/google/btree"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fleetcache/fleetcache/clusters"
)

// FreshnessSource tells the index which clusters exist and how current each one's cache
// is, for the freshness of answers: the fleet that feeds the index hands itself over
// (clusters.EventHandler.OnFleet). Loaded is false until the cluster source was read: an
// empty fleet then means "not known yet", and every answer is partial.
type FreshnessSource = clusters.FleetView

// Options tune an Index; zero values mean defaults.
type Options struct {
	// HistorySize is how many recent events each cluster's resource keeps for watches
	// that resume from a cursor. Default 4096.
	HistorySize int
	// WatchBuffer is each watcher's event buffer; a watcher that falls this far behind is
	// ended with an error rather than slowing down ingest. Default 1024.
	WatchBuffer int
	// ContinueTTL is how long a continue token stays valid. Default 15m.
	ContinueTTL time.Duration
	// RemovedRetention is how long a stopped informer's last events (the DELETED events
	// of its objects, which hold the objects) stay in the history for watches to resume
	// through, once its cluster's shard is empty; then the shard is dropped and the
	// objects freed, and a cursor from before that is 410 for the cluster. Default 1m.
	RemovedRetention time.Duration
}

// Index is the unified multi-cluster index. It implements clusters.EventHandler; its query
// methods are safe for concurrent use.
type Index struct {
	opts   Options
	status atomic.Pointer[sourceRef]

	mu        sync.RWMutex
	resources map[string]*resourceIndex // by resource name, e.g. "deployments.apps"
	names     map[string]string         // every name a resource answers to -> resource name
	stopped   map[uint64]bool           // informer runs that ended: late events are ignored
}

var _ clusters.EventHandler = (*Index)(nil)

// sourceRef holds the index's freshness source (an interface) for atomic replacement.
type sourceRef struct{ FreshnessSource }

// OnFleet implements clusters.EventHandler: the fleet that feeds the index is where its
// answers' freshness comes from.
func (ix *Index) OnFleet(f clusters.FleetView) { ix.status.Store(&sourceRef{f}) }

// source returns the freshness source, or nil.
func (ix *Index) source() FreshnessSource {
	if r := ix.status.Load(); r != nil {
		return r.FreshnessSource
	}
	return nil
}

// New returns an empty index. status may be nil: the fleet hands itself over when it
// starts (OnFleet); until then answers carry no freshness. Tests pass a fake.
func New(status FreshnessSource, opts Options) *Index {
	if opts.HistorySize == 0 {
		opts.HistorySize = 4096
	}
	if opts.WatchBuffer == 0 {
		opts.WatchBuffer = 1024
	}
	if opts.ContinueTTL == 0 {
		opts.ContinueTTL = DefaultContinueTTL
	}
	if opts.RemovedRetention == 0 {
		opts.RemovedRetention = time.Minute
	}
	ix := &Index{opts: opts, resources: map[string]*resourceIndex{}, names: map[string]string{}, stopped: map[uint64]bool{}}
	if status != nil {
		ix.OnFleet(status)
	}
	return ix
}

// resourceIndex holds one resource across clusters.
type resourceIndex struct {
	name       string
	kind       string
	apiVersion string
	namespaced bool
	singular   string
	shortNames []string
	categories []string
	columns    []clusters.PrinterColumn

	mu     sync.RWMutex
	shards map[string]*shard // by cluster
	// dropped holds, for each cluster whose shard was dropped (sweep), the last position
	// the shard issued: its history is gone, so a cursor at or before it cannot resume.
	dropped map[string]uint64

	// wmu guards watchers. Lock order: shard.mu, then wmu.
	wmu      sync.RWMutex
	watchers map[*watcher]struct{}
}

// shard is one resource in one cluster. Its entries, and the objects they point at, are
// never modified once stored (a change stores a new entry): a scan reads them without
// the lock, from a view taken under it (scan.go). mu is held for writing only by ingest
// (upsert, delete, stop) and, for reading, only for bounded work: a lookup, a view, the
// maintained counters.
type shard struct {
	cluster string

	mu    sync.RWMutex
	tree  *btree.BTreeG[*entry]
	byKey map[string]*entry // the same entries, for O(1) Get
	// cloneMu serializes snapshots of tree taken under the read lock (scan.go).
	cloneMu sync.Mutex

	// Objects are indexed by label set, and label sets by label: the objects alike (pods
	// of a ReplicaSet) are one entry per object in their set's map, not one per label.
	bySet   map[unique.Handle[string]]*labelSet
	byLabel map[pair]map[*labelSet]struct{}   // label key and value
	byField map[pair]map[*entry]struct{}      // index name and value
	byOwner map[types.UID]map[*entry]struct{} // owner UID
	nsCount map[string]int
	history history
	lastRV  uint64
}

// entry is one object in a shard; it points at the cluster cache's object.
type entry struct {
	key    string // namespace + "/" + name; "/" + name for cluster-scoped objects
	obj    *clusters.Object
	src    uint64                // the informer run that delivered it
	labels unique.Handle[string] // the object's labels, flattened (see labels.go)
	ns     unique.Handle[string] // the object's namespace, interned (see labels.go)
}

func entryLess(a, b *entry) bool { return a.key < b.key }

func objectKey(ns, name string) string { return ns + "/" + name }

func newShard(cluster string, historySize int) *shard {
	return &shard{
		cluster: cluster,
		tree:    btree.NewG(32, entryLess),
		byKey:   map[string]*entry{},
		bySet:   map[unique.Handle[string]]*labelSet{},
		byLabel: map[pair]map[*labelSet]struct{}{},
		byField: map[pair]map[*entry]struct{}{},
		byOwner: map[types.UID]map[*entry]struct{}{},
		nsCount: map[string]int{},
		history: newHistory(historySize),
	}
}

// labelSet is the entries of one shard that have one label set.
type labelSet struct {
	flat    unique.Handle[string]
	entries map[*entry]struct{}
}

func addTo[K comparable, V comparable](m map[K]map[V]struct{}, k K, e V) {
	set := m[k]
	if set == nil {
		set = map[V]struct{}{}
		m[k] = set
	}
	set[e] = struct{}{}
}

func removeFrom[K comparable, V comparable](m map[K]map[V]struct{}, k K, e V) {
	if set := m[k]; set != nil {
		delete(set, e)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

// pair keys the label and field indexes; a struct, not a joined string, so that indexing
// an object allocates no keys.
type pair struct{ k, v string }

// insert adds or replaces e; it returns the entry it replaced, if any. s.mu is held.
func (s *shard) insert(e *entry) *entry {
	old, replaced := s.tree.ReplaceOrInsert(e)
	s.byKey[e.key] = e
	if replaced {
		s.unindex(old)
	} else {
		s.nsCount[e.obj.Namespace]++
	}
	ls := s.bySet[e.labels]
	if ls == nil {
		ls = &labelSet{flat: e.labels, entries: map[*entry]struct{}{}}
		s.bySet[e.labels] = ls
		for k, v := range e.obj.Labels {
			addTo(s.byLabel, pair{k, v}, ls)
		}
	}
	ls.entries[e] = struct{}{}
	for _, f := range e.obj.Fields {
		addTo(s.byField, pair{f.Name, f.Value}, e)
	}
	for _, o := range e.obj.OwnerReferences {
		addTo(s.byOwner, o.UID, e)
	}
	return old
}

func (s *shard) unindex(e *entry) {
	if ls := s.bySet[e.labels]; ls != nil {
		delete(ls.entries, e)
		if len(ls.entries) == 0 {
			delete(s.bySet, e.labels)
			for k, v := range e.obj.Labels {
				removeFrom(s.byLabel, pair{k, v}, ls)
			}
		}
	}
	for _, f := range e.obj.Fields {
		removeFrom(s.byField, pair{f.Name, f.Value}, e)
	}
	for _, o := range e.obj.OwnerReferences {
		removeFrom(s.byOwner, o.UID, e)
	}
}

// remove deletes the entry with key; it returns it, if there was one. s.mu is held.
func (s *shard) remove(key string) *entry {
	old, ok := s.tree.Delete(&entry{key: key})
	if !ok {
		return nil
	}
	delete(s.byKey, key)
	s.unindex(old)
	if s.nsCount[old.obj.Namespace]--; s.nsCount[old.obj.Namespace] <= 0 {
		delete(s.nsCount, old.obj.Namespace)
	}
	return old
}

// resource returns the resource's index, creating it for ref.
func (ix *Index) resource(ref *clusters.InformerRef) *resourceIndex {
	ix.mu.RLock()
	r := ix.resources[ref.Resource]
	ix.mu.RUnlock()
	if r != nil {
		return r
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if r = ix.resources[ref.Resource]; r == nil {
		r = &resourceIndex{name: ref.Resource, kind: ref.Kind, apiVersion: ref.APIVersion, namespaced: ref.Namespaced,
			shards: map[string]*shard{}, dropped: map[string]uint64{}, watchers: map[*watcher]struct{}{}}
		ix.resources[ref.Resource] = r
	}
	ix.names[ref.Resource] = ref.Resource
	// The newest informer's view of the resource wins (a CRD's columns may change).
	r.singular, r.shortNames, r.categories = ref.Singular, ref.ShortNames, ref.Categories
	if len(ref.Columns) > 0 {
		r.columns = ref.Columns
	}
	for _, n := range ref.Names {
		if _, taken := ix.names[n]; !taken {
			ix.names[n] = ref.Resource
		}
	}
	return r
}

func (r *resourceIndex) shard(cluster string, historySize int) *shard {
	r.mu.RLock()
	s := r.shards[cluster]
	r.mu.RUnlock()
	if s != nil {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s = r.shards[cluster]; s == nil {
		s = newShard(cluster, historySize)
		// Positions go on from the dropped shard's: a cursor of the new shard is never
		// taken for one from before the drop.
		s.lastRV = r.dropped[cluster]
		r.shards[cluster] = s
	}
	return s
}

// sweep drops s, a shard emptied by its informer's stop, if nothing has refilled it: its
// history (the DELETED events, holding the objects) goes with it.
func (r *resourceIndex) sweep(s *shard) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shards[s.cluster] != s {
		return
	}
	s.mu.RLock()
	empty, last := s.tree.Len() == 0, s.lastRV
	s.mu.RUnlock()
	if !empty {
		return // a new run of the informer (the cluster restarted) filled it again
	}
	delete(r.shards, s.cluster)
	r.dropped[s.cluster] = last
	releaseSoon()
}

// releasePending is set while a release is scheduled.
var releasePending atomic.Bool

// releaseSoon returns the memory of dropped shards to the OS a second from now (once for
// all the shards a handover or a kubeconfig change drops together). Without it an idle
// daemon keeps it until the runtime's periodic collection, minutes later.
func releaseSoon() {
	if releasePending.CompareAndSwap(false, true) {
		time.AfterFunc(time.Second, func() {
			releasePending.Store(false)
			debug.FreeOSMemory()
		})
	}
}

func (ix *Index) isStopped(id uint64) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.stopped[id]
}

// OnAdd implements clusters.EventHandler.
func (ix *Index) OnAdd(ref *clusters.InformerRef, obj *clusters.Object) {
	ix.upsert(ref, nil, obj)
}

// OnUpdate implements clusters.EventHandler.
func (ix *Index) OnUpdate(ref *clusters.InformerRef, old, obj *clusters.Object) {
	ix.upsert(ref, old, obj)
}

func (ix *Index) upsert(ref *clusters.InformerRef, old, obj *clusters.Object) {
	if ix.isStopped(ref.ID) {
		return
	}
	r := ix.resource(ref)
	s := r.shard(ref.Cluster, ix.opts.HistorySize)
	e := &entry{key: objectKey(obj.Namespace, obj.Name), obj: obj, src: ref.ID, labels: obj.FlatLabels(), ns: unique.Make(obj.Namespace)}
	s.mu.Lock()
	prev := s.insert(e)
	typ := watch.Added
	var prevObj *clusters.Object
	if prev != nil {
		typ, prevObj = watch.Modified, prev.obj
	}
	r.emit(s, typ, obj, prevObj)
	s.mu.Unlock()
}

// OnDelete implements clusters.EventHandler.
func (ix *Index) OnDelete(ref *clusters.InformerRef, obj *clusters.Object) {
	if ix.isStopped(ref.ID) {
		return
	}
	r := ix.resource(ref)
	s := r.shard(ref.Cluster, ix.opts.HistorySize)
	s.mu.Lock()
	old := s.remove(objectKey(obj.Namespace, obj.Name))
	if old == nil {
		s.mu.Unlock()
		return
	}
	r.emit(s, watch.Deleted, obj, nil)
	s.mu.Unlock()
}

// OnStop implements clusters.EventHandler: the informer's objects leave the index (each
// with a DELETED event for watchers), unless a newer run has replaced them.
func (ix *Index) OnStop(ref *clusters.InformerRef) {
	ix.mu.Lock()
	ix.stopped[ref.ID] = true
	r := ix.resources[ref.Resource]
	ix.mu.Unlock()
	if r == nil {
		return
	}
	r.mu.RLock()
	s := r.shards[ref.Cluster]
	r.mu.RUnlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	var gone []*entry
	s.tree.Ascend(func(e *entry) bool {
		if e.src == ref.ID {
			gone = append(gone, e)
		}
		return true
	})
	for _, e := range gone {
		s.remove(e.key)
		r.emit(s, watch.Deleted, e.obj, nil)
	}
	empty := s.tree.Len() == 0
	s.mu.Unlock()
	if empty {
		// A removed cluster (or a resource it no longer serves): its history, which holds
		// every object it had, is kept a while for watches to resume, then freed.
		time.AfterFunc(ix.opts.RemovedRetention, func() { r.sweep(s) })
	}
}

// Learn adds a resource that no informer here has reported, as another sharded replica
// describes it: a custom resource that none of this replica's clusters serve is still
// in its discovery, so a client that reaches this replica can ask for it (and gets the
// other replicas' objects through the router). An informer's own view, if one comes
// later, replaces the learnt one. It reports whether the resource was new.
func (ix *Index) Learn(info ResourceInfo) bool {
	if info.Name == "" || info.Kind == "" || info.APIVersion == "" {
		return false
	}
	if _, known := ix.lookup(info.Name); known {
		return false
	}
	ix.resource(&clusters.InformerRef{Resource: info.Name, Kind: info.Kind, APIVersion: info.APIVersion, Namespaced: info.Namespaced,
		Names: info.Aliases, Singular: info.Singular, ShortNames: info.ShortNames, Categories: info.Categories, Columns: info.Columns})
	return true
}

// Resources lists the resources in the index, sorted.
func (ix *Index) Resources() []ResourceInfo {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]ResourceInfo, 0, len(ix.resources))
	for _, r := range ix.resources {
		info := r.info()
		for n, target := range ix.names {
			if target == r.name && n != r.name {
				info.Aliases = append(info.Aliases, n)
			}
		}
		sort.Strings(info.Aliases)
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ResourceInfo describes one indexed resource.
type ResourceInfo struct {
	Name       string                   `json:"name"`
	Kind       string                   `json:"kind"`
	APIVersion string                   `json:"apiVersion"`
	Namespaced bool                     `json:"namespaced"`
	Aliases    []string                 `json:"aliases,omitempty"`
	Singular   string                   `json:"singular,omitempty"`
	ShortNames []string                 `json:"shortNames,omitempty"`
	Categories []string                 `json:"categories,omitempty"`
	Columns    []clusters.PrinterColumn `json:"printerColumns,omitempty"`
}

// IsSecret reports whether the resource is core Secrets, which are served only when the
// configuration allows it (and never with their values).
func (r ResourceInfo) IsSecret() bool { return r.Kind == "Secret" && r.APIVersion == "v1" }

// Resource returns the resource a name (as kubectl takes it) resolves to.
func (ix *Index) Resource(name string) (ResourceInfo, bool) {
	r, ok := ix.lookup(name)
	if !ok {
		return ResourceInfo{}, false
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return r.info(), true
}

// Cursor is the current position of the selected clusters' streams for a resource: a
// watch from it starts now. It is what a list's resourceVersion means.
func (ix *Index) Cursor(q Query) (Cursor, error) {
	p, err := ix.plan(q)
	if err != nil {
		return nil, err
	}
	c := Cursor{}
	for _, s := range p.shards {
		s.mu.RLock()
		c[s.cluster] = s.lastRV
		s.mu.RUnlock()
	}
	return c, nil
}

// lookup resolves a resource name as kubectl would (plural, name.group, singular, short
// name, kind in lower case).
func (ix *Index) lookup(name string) (*resourceIndex, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if canonical, ok := ix.names[name]; ok {
		return ix.resources[canonical], true
	}
	return nil, false
}
