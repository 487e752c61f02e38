package aggregator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/glob"
)

// Query selects objects of one resource across clusters. The zero value of each filter
// selects everything.
type Query struct {
	Resource string
	// Clusters is a glob over cluster names ("prod-*"); empty means all. A name without
	// glob characters that names no cluster is ErrUnknownCluster.
	Clusters string
	// Namespace limits to one namespace; empty means all.
	Namespace     string
	LabelSelector labels.Selector
	FieldSelector fields.Selector
	// Limit caps the items of one List page; 0 means no limit.
	Limit int
	// Continue resumes a List from the token of the previous page.
	Continue string
	// After starts a List after this position, "cluster/namespace/name" (namespace empty
	// for cluster-scoped objects): how a sharding router resumes on each replica. Unlike
	// Continue it is not signed; it is only a position, the query decides what is seen.
	After string
	// Only, when not empty, restricts the query to these clusters (exact names), on top of
	// Clusters: how a sharding router asks a replica for its part.
	Only []string
	// Scope limits what the caller may see; nil sees everything.
	Scope Scope
}

// Scope is a caller's visibility: clusters, and namespaces within them. Clusters outside
// it do not exist for the caller (an explicit name is ErrUnknownCluster).
type Scope interface {
	SeesCluster(name string) bool
	// SeesNamespace reports whether the caller sees the cluster's objects in ns ("" for
	// cluster-scoped objects): a caller's namespaces may differ from cluster to cluster.
	SeesNamespace(cluster, ns string) bool
}

func (q *Query) normalize() {
	if q.LabelSelector == nil {
		q.LabelSelector = labels.Everything()
	}
	if q.FieldSelector == nil {
		q.FieldSelector = fields.Everything()
	}
}

// hash identifies the query's selection (not its paging) for continue tokens.
func (q *Query) hash(resource string) string {
	h := sha256.Sum256([]byte(strings.Join([]string{resource, q.Clusters, q.Namespace, q.LabelSelector.String(), q.FieldSelector.String()}, "\x00")))
	return hex.EncodeToString(h[:8])
}

// Item is one object with the cluster it came from. Object is shared with the cache:
// never modify it.
type Item struct {
	Cluster  string
	Resource string
	Object   *clusters.Object
}

// Freshness says how current one cluster's part of an answer is.
type Freshness struct {
	Cluster string `json:"cluster"`
	// Phase of the cluster, and of the queried resource in it, with their reasons (e.g.
	// Unreachable/Timeout, Degraded/Stale).
	Phase          clusters.Phase `json:"phase"`
	Reason         string         `json:"reason,omitempty"`
	ResourcePhase  clusters.Phase `json:"resourcePhase,omitempty"`
	ResourceReason string         `json:"resourceReason,omitempty"`
	// StalenessSeconds bounds how far this cluster's part may be behind the cluster: the
	// cache held everything the apiserver had this long ago. Absent when nothing is
	// proven yet.
	StalenessSeconds *float64 `json:"stalenessSeconds,omitempty"`
	// LastEventTime is when the cluster's cache last heard from the apiserver about the
	// resource (watch event or bookmark).
	LastEventTime *time.Time `json:"lastEventTime,omitempty"`
	Message       string     `json:"message,omitempty"`
	// Replica names the fleetcache replica that answered for this cluster (sharding).
	Replica string `json:"replica,omitempty"`
}

// ListResult is one page of a List.
type ListResult struct {
	Resource ResourceInfo
	Items    []Item
	// Continue is set when more items may follow; pass it back in Query.Continue.
	Continue string
	// Clusters is the freshness of every selected cluster, sorted by name.
	Clusters []Freshness
	// Partial is true when some selected cluster's resource is not Synced: its part of the
	// answer may be missing or stale.
	Partial bool

	queryHash string
}

// plan is a query resolved against the index.
type plan struct {
	q        Query
	resource *resourceIndex
	shards   []*shard // selected, sorted by cluster
	clusters []string // selected cluster names, also those without a shard yet
}

func (ix *Index) plan(q Query) (*plan, error) {
	q.normalize()
	r, ok := ix.lookup(q.Resource)
	if !ok {
		return nil, fmt.Errorf("%w %q: not cached (the resources cached are listed by GET /api/v1/resources)", ErrUnknownResource, q.Resource)
	}
	if q.Clusters != "" {
		if err := glob.Validate(q.Clusters); err != nil {
			return nil, fmt.Errorf("%w: cluster pattern %q: %v", ErrUnknownCluster, q.Clusters, err)
		}
	}
	p := &plan{q: q, resource: r}
	known := map[string]bool{}
	for _, c := range ix.clusterNames() {
		known[c] = true
	}
	r.mu.RLock()
	for name := range r.shards {
		known[name] = true
	}
	var only map[string]bool
	if len(q.Only) > 0 {
		only = map[string]bool{}
		for _, c := range q.Only {
			only[c] = true
		}
	}
	for name := range known {
		if q.Scope != nil && !q.Scope.SeesCluster(name) {
			continue
		}
		if only != nil && !only[name] {
			continue
		}
		if q.Clusters == "" || glob.Match(q.Clusters, name) {
			p.clusters = append(p.clusters, name)
			if s := r.shards[name]; s != nil {
				p.shards = append(p.shards, s)
			}
		}
	}
	r.mu.RUnlock()
	if q.Clusters != "" && !glob.HasMeta(q.Clusters) && len(p.clusters) == 0 {
		return nil, fmt.Errorf("%w %q", ErrUnknownCluster, q.Clusters)
	}
	sort.Strings(p.clusters)
	sort.Slice(p.shards, func(i, j int) bool { return p.shards[i].cluster < p.shards[j].cluster })
	return p, nil
}

func (ix *Index) clusterNames() []string {
	src := ix.source()
	if src == nil {
		return nil
	}
	return src.Names()
}

// freshness reports the selected clusters' state for the resource, and whether the
// answer is partial: some selected cluster's part is not proven complete and current, or
// the clusters are not known yet.
func (ix *Index) freshness(p *plan) ([]Freshness, bool) {
	out := make([]Freshness, 0, len(p.clusters))
	src := ix.source()
	if src == nil {
		return out, false
	}
	partial := !src.Loaded()
	for _, name := range p.clusters {
		cf, ok := src.Freshness(name, p.resource.name)
		if !ok {
			out = append(out, Freshness{Cluster: name, Phase: clusters.PhaseStopped, Message: "no longer cached"})
			partial = true
			continue
		}
		f := Freshness{Cluster: name, Phase: cf.Phase, Reason: cf.Reason, Message: cf.Message,
			ResourcePhase: cf.ResourcePhase, ResourceReason: cf.ResourceReason}
		if cf.Proven {
			secs := cf.Staleness.Seconds()
			f.StalenessSeconds = &secs
		}
		if !cf.LastEventTime.IsZero() {
			t := cf.LastEventTime
			f.LastEventTime = &t
		}
		partial = partial || !cf.Current()
		out = append(out, f)
	}
	return out, partial
}

// matcher evaluates a query's selectors on entries.
type matcher struct {
	scope  Scope
	ns     string
	labels labels.Selector
	fields fields.Selector
	// needsLabels and needsFields are false when the selector is empty.
	needsLabels, needsFields bool
}

func newMatcher(q Query) matcher {
	return matcher{scope: q.Scope, ns: q.Namespace, labels: q.LabelSelector, fields: q.FieldSelector,
		needsLabels: !q.LabelSelector.Empty(), needsFields: !q.FieldSelector.Empty()}
}

// entryMatcher is a matcher for one scan over entries: it reads namespaces from keys and
// labels from their flattened form, so that a non-matching object is never touched, and
// fields no index holds through the scan's own field reader. Not safe for concurrent
// use: each scanning goroutine has its own.
type entryMatcher struct {
	m      matcher
	seesNS func(ns string) bool // the scope in the shard's cluster; nil: no scope
	lm     labelMatcher
	fr     clusters.FieldReader
	of     objectFields
}

// namespacesIn is a Scope that answers for one cluster at once (auth.User): a scan then
// matches the cluster against the caller's view once, not per object.
type namespacesIn interface {
	NamespacesIn(cluster string) func(ns string) bool
}

func (m matcher) forScan(cluster string) *entryMatcher {
	em := &entryMatcher{m: m, lm: labelMatcher{sel: m.labels}}
	em.of.r = &em.fr
	switch sc := m.scope.(type) {
	case nil:
	case namespacesIn:
		em.seesNS = sc.NamespacesIn(cluster)
	default:
		em.seesNS = func(ns string) bool { return sc.SeesNamespace(cluster, ns) }
	}
	return em
}

func (em *entryMatcher) matches(e *entry) bool {
	m := &em.m
	if m.ns != "" || m.scope != nil {
		ns := e.namespace()
		if m.ns != "" && ns != m.ns || em.seesNS != nil && !em.seesNS(ns) {
			return false
		}
	}
	if m.needsLabels && !em.lm.matches(e.labels) {
		return false
	}
	return !m.needsFields || m.fields.Matches(em.fields(e.obj))
}

// fields is obj's fields as the scan reads them.
func (em *entryMatcher) fields(obj *clusters.Object) *objectFields {
	em.of.obj = obj
	return &em.of
}

func (m matcher) matches(cluster string, obj *clusters.Object) bool {
	if m.ns != "" && obj.Namespace != m.ns {
		return false
	}
	if m.scope != nil && !m.scope.SeesNamespace(cluster, obj.Namespace) {
		return false
	}
	if !m.labels.Empty() && !m.labels.Matches(labels.Set(obj.Labels)) {
		return false
	}
	if m.needsFields {
		r := readers.Get().(*clusters.FieldReader)
		ok := m.fields.Matches(&objectFields{obj: obj, r: r})
		readers.Put(r)
		return ok
	}
	return true
}

// candidates returns, when an index narrows the query, the entries it selects (a
// superset of the matches, in no order: the scan sorts them once the lock is released);
// ok is false when the query must scan. s.mu is held; what it collects is bounded by a
// quarter of the shard.
func (s *shard) candidates(q Query) (out []*entry, ok bool) {
	var bestUnion []map[*entry]struct{}
	consider := func(sets []map[*entry]struct{}) {
		n := 0
		for _, set := range sets {
			n += len(set)
		}
		cur := -1
		if bestUnion != nil {
			cur = 0
			for _, set := range bestUnion {
				cur += len(set)
			}
		}
		if cur < 0 || n < cur {
			bestUnion = sets
		}
	}
	if reqs, selectable := q.LabelSelector.Requirements(); selectable {
		for _, r := range reqs {
			if r.Operator() == selection.Equals || r.Operator() == selection.DoubleEquals || r.Operator() == selection.In {
				sets := []map[*entry]struct{}{} // none: nothing matches, and no scan is needed
				for v := range r.Values() {
					for ls := range s.byLabel[pair{r.Key(), v}] {
						sets = append(sets, ls.entries)
					}
				}
				consider(sets)
			}
		}
	}
	for _, r := range q.FieldSelector.Requirements() {
		if r.Operator != selection.Equals && r.Operator != selection.DoubleEquals {
			continue
		}
		if r.Field == "metadata.name" || r.Field == "metadata.namespace" {
			continue
		}
		// Only fields some object indexes; otherwise the field is not indexed here.
		if !s.hasIndex(r.Field) {
			continue
		}
		consider([]map[*entry]struct{}{s.byField[pair{r.Field, r.Value}]})
	}
	if bestUnion == nil {
		return nil, false
	}
	n := 0
	for _, set := range bestUnion {
		n += len(set)
	}
	// A broad index is no better than scanning in order.
	if n > s.tree.Len()/4 && n > 64 {
		return nil, false
	}
	out = make([]*entry, 0, n)
	for _, set := range bestUnion {
		for e := range set {
			out = append(out, e)
		}
	}
	return out, true
}

// ReadsObjects reports whether answering q (with a Count's groupBy) reads a field from
// every object it selects: a field selector or a field: group-by on a path that is
// neither metadata.name, metadata.namespace nor one of the resource's indexes. That is
// microseconds per object, seconds at a million objects: the server admits such a
// query as it admits a whole list.
func (ix *Index) ReadsObjects(q Query, groupBy []string) bool {
	var paths []string
	if q.FieldSelector != nil {
		for _, r := range q.FieldSelector.Requirements() {
			paths = append(paths, r.Field)
		}
	}
	for _, k := range groupBy {
		if path, ok := strings.CutPrefix(k, "field:"); ok {
			paths = append(paths, path)
		}
	}
	if len(paths) == 0 {
		return false
	}
	r, ok := ix.lookup(q.Resource)
	if !ok {
		return false // the query fails
	}
	r.mu.RLock()
	shards := make([]*shard, 0, len(r.shards))
	for _, s := range r.shards {
		shards = append(shards, s)
	}
	r.mu.RUnlock()
	for _, path := range paths {
		if path == "metadata.name" || path == "metadata.namespace" {
			continue
		}
		indexed := false
		for _, s := range shards {
			s.mu.RLock()
			empty, has := s.tree.Len() == 0, s.hasIndex(path)
			s.mu.RUnlock()
			if !empty {
				indexed = has
				break
			}
		}
		if !indexed {
			return true
		}
	}
	return false
}

// hasIndex reports whether objects of this shard carry the named index. s.mu is held.
func (s *shard) hasIndex(name string) bool {
	found := false
	s.tree.Ascend(func(e *entry) bool {
		_, found = e.obj.Field(name)
		return false // the first object tells: every object of a resource has the same indexes
	})
	return found
}

// List returns the objects a query selects, ordered by cluster, namespace and name. With
// a Limit it returns one page and a continue token; paging resumes after the last key
// returned, so it stays correct while objects change: an object that exists during the
// whole paging is returned exactly once, one created or deleted meanwhile at most once.
// A list that scans stops within a chunk of objects once ctx ends, and returns its error.
func (ix *Index) List(ctx context.Context, q Query) (*ListResult, error) {
	p, err := ix.plan(q)
	if err != nil {
		return nil, err
	}
	q = p.q
	qh := q.hash(p.resource.name)
	var afterCluster, afterKey string
	if q.Continue != "" {
		t, err := decodeContinue(q.Continue, qh, time.Now(), ix.opts.ContinueTTL)
		if err != nil {
			return nil, fmt.Errorf("continue token: %w", err)
		}
		afterCluster, afterKey = t.Cluster, t.Key
	} else if q.After != "" {
		c, key, ok := strings.Cut(q.After, "/")
		if !ok || c == "" || !strings.Contains(key, "/") {
			return nil, fmt.Errorf("%w: after %q: want cluster/namespace/name", ErrInvalidToken, q.After)
		}
		afterCluster, afterKey = c, key
	}
	res := &ListResult{Resource: p.resource.info(), queryHash: qh}
	// Freshness first, then the items: a proof reached during the scan would otherwise
	// vouch for items read before it (an answer claimed 0.1s while missing a write made
	// before the pause it claimed to cover).
	res.Clusters, res.Partial = ix.freshness(p)
	m := newMatcher(q)
	full := false
	pace := &pacer{ctx: ctx}
	for _, s := range p.shards {
		if s.cluster < afterCluster {
			continue
		}
		after := ""
		if s.cluster == afterCluster {
			after = afterKey
		}
		v := s.read(q)
		err := v.scan(q, m.forScan(s.cluster), after, pace, func(e *entry) bool {
			if q.Limit > 0 && len(res.Items) == q.Limit {
				full = true
				return false
			}
			res.Items = append(res.Items, Item{Cluster: s.cluster, Resource: p.resource.name, Object: e.obj})
			return true
		})
		if err != nil {
			return nil, err
		}
		if full {
			break
		}
	}
	if full {
		res.Continue = res.ContinueAfter(len(res.Items) - 1)
	}
	return res, nil
}

// Get returns one object. For a cluster-scoped resource namespace is "". A scope that
// does not see the object makes it not found.
func (ix *Index) Get(cluster, resource, namespace, name string, scope ...Scope) (Item, error) {
	for _, sc := range scope {
		if sc != nil && !sc.SeesCluster(cluster) {
			return Item{}, fmt.Errorf("%w %q", ErrUnknownCluster, cluster)
		}
		if sc != nil && !sc.SeesNamespace(cluster, namespace) {
			return Item{}, fmt.Errorf("%w: %s %s/%s in cluster %s", ErrNotFound, resource, namespace, name, cluster)
		}
	}
	r, ok := ix.lookup(resource)
	if !ok {
		return Item{}, fmt.Errorf("%w %q", ErrUnknownResource, resource)
	}
	r.mu.RLock()
	s := r.shards[cluster]
	r.mu.RUnlock()
	if s == nil {
		if !ix.hasCluster(cluster) {
			return Item{}, fmt.Errorf("%w %q", ErrUnknownCluster, cluster)
		}
		return Item{}, fmt.Errorf("%w: %s %s/%s in cluster %s", ErrNotFound, r.name, namespace, name, cluster)
	}
	s.mu.RLock()
	e, found := s.byKey[objectKey(namespace, name)]
	s.mu.RUnlock()
	if !found {
		return Item{}, fmt.Errorf("%w: %s %s/%s in cluster %s", ErrNotFound, r.name, namespace, name, cluster)
	}
	return Item{Cluster: cluster, Resource: r.name, Object: e.obj}, nil
}

func (ix *Index) hasCluster(name string) bool {
	for _, c := range ix.clusterNames() {
		if c == name {
			return true
		}
	}
	return false
}

// Group is one row of a Count: the values of the group-by keys, in their order, and how
// many objects have them.
type Group struct {
	Values []string `json:"values"`
	Count  int      `json:"count"`
}

// CountResult is the answer of a Count.
type CountResult struct {
	Resource ResourceInfo
	GroupBy  []string
	Groups   []Group // sorted by values
	Total    int
	Clusters []Freshness
	Partial  bool
}

// maxGroupBy is how many keys a Count may group by.
const maxGroupBy = 4

// ValidateGroupBy checks group-by keys: "cluster", "namespace", "label:<key>" or
// "field:<indexed field>", at most maxGroupBy of them.
func ValidateGroupBy(keys []string) error {
	if len(keys) > maxGroupBy {
		return fmt.Errorf("groupBy: at most %d keys, got %d", maxGroupBy, len(keys))
	}
	for _, k := range keys {
		switch {
		case k == "cluster", k == "namespace":
		case strings.HasPrefix(k, "label:") && len(k) > len("label:"):
		case strings.HasPrefix(k, "field:") && len(k) > len("field:"):
		default:
			return fmt.Errorf("groupBy %q: want cluster, namespace, label:<key> or field:<path>", k)
		}
	}
	return nil
}

// Count counts the objects a query selects (Limit and Continue are ignored), grouped by
// the given keys (see ValidateGroupBy). A count that visits the objects scans the shards
// on up to cores.Allowed(ctx) goroutines, each shard on a snapshot and without its lock
// (scan.go), and stops within a chunk of objects once ctx ends, returning its error.
func (ix *Index) Count(ctx context.Context, q Query, groupBy []string) (*CountResult, error) {
	if err := ValidateGroupBy(groupBy); err != nil {
		return nil, err
	}
	p, err := ix.plan(q)
	if err != nil {
		return nil, err
	}
	q = p.q
	res := &CountResult{Resource: p.resource.info(), GroupBy: groupBy}
	res.Clusters, res.Partial = ix.freshness(p) // before the counting: see List
	// A fixed-size array key: no allocation per object counted.
	counts := map[[maxGroupBy]string]int{}
	noFilter := q.LabelSelector.Empty() && q.FieldSelector.Empty()
	byNamespace, byLabel := noFilter, noFilter && q.Namespace == "" && q.Scope == nil
	for _, k := range groupBy {
		byNamespace = byNamespace && (k == "cluster" || k == "namespace")
		byLabel = byLabel && (k == "cluster" || strings.HasPrefix(k, "label:"))
	}
	byLabel = byLabel && !byNamespace && labelKeys(groupBy) == 1
	switch {
	case byNamespace:
		// Kept up to date on every change: no need to visit the objects.
		for _, s := range p.shards {
			s.mu.RLock()
			countNamespaces(s, q, groupBy, counts)
			s.mu.RUnlock()
		}
	case byLabel:
		// The label index already holds each value's objects.
		for _, s := range p.shards {
			s.mu.RLock()
			countLabel(s, groupBy, counts)
			s.mu.RUnlock()
		}
	default:
		if err := countScans(ctx, p, q, parseGroupBy(groupBy), counts); err != nil {
			return nil, err
		}
	}
	// One backing array for every group's values: a count by cluster and namespace has
	// hundreds of groups.
	res.Groups = make([]Group, 0, len(counts))
	values := make([]string, 0, len(counts)*len(groupBy))
	for vals, n := range counts {
		values = append(values, vals[:len(groupBy)]...)
		res.Groups = append(res.Groups, Group{Values: values[len(values)-len(groupBy) : len(values) : len(values)], Count: n})
		res.Total += n
	}
	sort.Slice(res.Groups, func(i, j int) bool {
		a, b := res.Groups[i].Values, res.Groups[j].Values
		for k := range a {
			if a[k] != b[k] {
				return a[k] < b[k]
			}
		}
		return false
	})
	return res, nil
}

// countNamespaces counts a shard's objects per namespace from its maintained counters.
// s.mu is held.
func countNamespaces(s *shard, q Query, groupBy []string, counts map[[maxGroupBy]string]int) {
	var values [maxGroupBy]string
	for ns, n := range s.nsCount {
		if q.Namespace != "" && ns != q.Namespace || q.Scope != nil && !q.Scope.SeesNamespace(s.cluster, ns) {
			continue
		}
		for i, k := range groupBy {
			if k == "cluster" {
				values[i] = s.cluster
			} else {
				values[i] = ns
			}
		}
		counts[values] += n
	}
}

// countLabel counts a shard's objects per value of the group-by's one label, from the
// label index. s.mu is held.
func countLabel(s *shard, groupBy []string, counts map[[maxGroupBy]string]int) {
	var values [maxGroupBy]string
	key := labelOf(groupBy)
	labelled := 0
	fill := func(v string, n int) {
		for i, k := range groupBy {
			if k == "cluster" {
				values[i] = s.cluster
			} else {
				values[i] = v
			}
		}
		counts[values] += n
	}
	for p, sets := range s.byLabel {
		if p.k == key {
			n := 0
			for ls := range sets {
				n += len(ls.entries)
			}
			fill(p.v, n)
			labelled += n
		}
	}
	if rest := s.tree.Len() - labelled; rest > 0 {
		fill("", rest)
	}
}

// countScans counts by visiting the selected objects: the shards are scanned by up to
// cores.Allowed(ctx) goroutines (a scan is bound by memory latency and field reads, not
// by one core), each into counts of its own, merged at the end. The allowance is asked
// before each shard: a shard is about a tenth of a second of work at 100,000 objects.
func countScans(ctx context.Context, p *plan, q Query, keys []groupKey, counts map[[maxGroupBy]string]int) error {
	m := newMatcher(q)
	workers := min(goruntime.GOMAXPROCS(0), len(p.shards))
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	left := func() bool { return int(next.Load()) < len(p.shards) }
	for w := range workers {
		wg.Go(func() {
			pace := &pacer{ctx: ctx}
			local := map[[maxGroupBy]string]int{}
			var err error
			for err == nil {
				// A second goroutine takes a shard only while the request may use a
				// second core; once it has one, it scans it to the end.
				if w > 0 && !awaitCore(ctx, w, left) {
					break
				}
				i := int(next.Add(1)) - 1
				if i >= len(p.shards) {
					break
				}
				err = countShard(p.shards[i], q, m, keys, pace, local)
			}
			if err == nil {
				err = ctx.Err()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			for k, n := range local {
				counts[k] += n
			}
		})
	}
	wg.Wait()
	return firstErr
}

// countShard counts one shard's selected objects into local. Objects visited in key
// order mostly repeat the previous one's group: they are counted in runs, and the map is
// touched once per run.
func countShard(s *shard, q Query, m matcher, keys []groupKey, pace *pacer, local map[[maxGroupBy]string]int) error {
	v := s.read(q)
	em := m.forScan(s.cluster)
	var values, run [maxGroupBy]string
	n := 0
	var fl flatLabels
	err := v.scan(q, em, "", pace, func(e *entry) bool {
		for i, k := range keys {
			switch k.kind {
			case groupCluster:
				values[i] = s.cluster
			case groupNamespace:
				values[i] = e.namespace()
			case groupLabel:
				fl.s = e.labels.Value()
				values[i] = fl.Get(k.name)
			default:
				values[i] = em.fields(e.obj).Get(k.name) // valid until the next object
			}
		}
		if n > 0 && values == run {
			n++
			return true
		}
		if n > 0 {
			local[run] += n
		}
		run, n = values, 1
		for i, k := range keys {
			if k.kind == groupField {
				run[i] = strings.Clone(run[i]) // kept as a map key
			}
		}
		return true
	})
	if n > 0 {
		local[run] += n
	}
	return err
}

// labelKeys counts the label: keys of a group-by.
func labelKeys(groupBy []string) int {
	n := 0
	for _, k := range groupBy {
		if strings.HasPrefix(k, "label:") {
			n++
		}
	}
	return n
}

func labelOf(groupBy []string) string {
	for _, k := range groupBy {
		if after, ok := strings.CutPrefix(k, "label:"); ok {
			return after
		}
	}
	return ""
}

type groupKind int

const (
	groupCluster groupKind = iota
	groupNamespace
	groupLabel
	groupField
)

// groupKey is a group-by key parsed once per Count, not once per object.
type groupKey struct {
	key, name string
	kind      groupKind
}

func parseGroupBy(groupBy []string) []groupKey {
	out := make([]groupKey, len(groupBy))
	for i, k := range groupBy {
		out[i] = groupKey{key: k, kind: groupField}
		switch {
		case k == "cluster":
			out[i].kind = groupCluster
		case k == "namespace":
			out[i].kind = groupNamespace
		case strings.HasPrefix(k, "label:"):
			out[i].kind, out[i].name = groupLabel, k[len("label:"):]
		default:
			out[i].name = k[len("field:"):]
		}
	}
	return out
}

func (r *resourceIndex) info() ResourceInfo {
	return ResourceInfo{Name: r.name, Kind: r.kind, APIVersion: r.apiVersion, Namespaced: r.namespaced,
		Singular: r.singular, ShortNames: r.shortNames, Categories: r.categories, Columns: r.columns}
}

// ContinueAfter returns a continue token that resumes the listing after Items[i]: for
// callers that cut a page short (e.g. to bound a response's size).
func (r *ListResult) ContinueAfter(i int) string {
	it := r.Items[i]
	return encodeContinue(continueToken{Query: r.queryHash, Cluster: it.Cluster, Key: objectKey(it.Object.Namespace, it.Object.Name), Issued: time.Now().Unix()})
}
