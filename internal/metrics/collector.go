// Package metrics exports fleetcache's state to Prometheus. Values are computed at scrape
// time from the clusters' status, so a removed cluster's series disappear with it.
package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetcache/fleetcache/clusters"
)

// StatusSource is what the collector reads: every cluster's summary for the
// cluster-level series, and every resource's status only for the per-resource ones (a
// scrape of cluster-level series builds no resource status).
type StatusSource interface {
	Summaries() []clusters.ClusterSummary
	Status() []clusters.ClusterStatus
}

// Options choose what the collector exports.
type Options struct {
	// ClusterSeriesOnly drops every per-resource series: about 19 series per cluster
	// remain instead of about 62 per cluster and resource (README: Metrics), for fleets
	// of hundreds of clusters whose scrape would otherwise hold a million series.
	ClusterSeriesOnly bool
	// Budget, when set, is exported as fleetcache_freshness_interval_scale.
	Budget *clusters.RequestBudget
}

// Collector turns cluster and resource status into metrics. Register it with a
// Registerer; it holds no state of its own.
type Collector struct {
	src   StatusSource
	opts  Options
	descs []*prometheus.Desc

	clusterInfo, clusterSynced, clusterPhase, lastProbe, clusterInitialSync, connResets, probes,
	clusterObjects, clusterStaleness, intervalScale, discoveryRequests *prometheus.Desc

	resourceSynced, resourcePhase, objects, watchConnected, lastEvent, lastBookmark, lastList,
	initialSyncDuration, lists, listErrors, relists, watchStarts, watchErrors, watchListFallbacks, events,
	listDuration, staleness, syncLag, rvLag *prometheus.Desc

	// phaseLabels and eventLabels are the phase="..." and type="..." label pairs, built
	// once: a scrape shares them between all series.
	phaseLabels []*dto.LabelPair
	eventLabels []*dto.LabelPair
}

// NewCollector returns a collector over src; at most one Options.
func NewCollector(src StatusSource, opts ...Options) *Collector {
	c := &Collector{src: src}
	if len(opts) > 0 {
		c.opts = opts[0]
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		desc := prometheus.NewDesc("fleetcache_"+name, help, labels, nil)
		c.descs = append(c.descs, desc)
		return desc
	}
	cl, res := []string{"cluster"}, []string{"cluster", "resource"}
	c.clusterInfo = d("cluster_info", "Constant 1 for each cached cluster, labelled with its apiserver URL and git version (empty until the first successful probe).", "cluster", "server", "version")
	c.clusterSynced = d("cluster_synced", "1 if the cluster's phase is Synced: its apiserver answers the health probe and every cached resource is Synced (or not served by it); else 0.", cl...)
	c.clusterPhase = d("cluster_phase", "The cluster's phase as a state set: 1 for the current phase, 0 for the others.", "cluster", "phase")
	c.lastProbe = d("cluster_last_probe_timestamp_seconds", "Unix time of the last freshness probe (a consistent one-object list) the apiserver answered.", cl...)
	c.probes = d("cluster_probes_total", "Requests the cluster's freshness and health probes made to its apiserver (with lists_total and watch_starts_total, the load fleetcache puts on it).", cl...)
	c.connResets = d("cluster_connection_resets_total", "Times the cluster's connections were closed because a probe on them timed out: a connection that stopped delivering, whose watches then reconnected.", cl...)
	c.discoveryRequests = d("cluster_discovery_requests_total", "Requests the cluster's discovery (the resources it serves, every rediscoveryInterval) made to its apiserver.", cl...)
	c.clusterObjects = d("cluster_objects", "Objects held in the cluster's cache, all resources together.", cl...)
	c.clusterStaleness = d("cluster_staleness_seconds", "Upper bound on how far the cluster's cache is behind its apiserver, now: the largest staleness_seconds of its resources. Absent until every resource has one.", cl...)
	c.intervalScale = d("freshness_interval_scale", "Factor by which the fleet-wide probe budget (probeBudget) stretches every cluster's probeInterval, idleProofInterval and staleAfter: 1 while the fleet is within the budget.")
	c.clusterInitialSync = d("initial_sync_timestamp_seconds", "Unix time at which every resource of the cluster was first synced.", cl...)
	c.resourceSynced = d("resource_synced", "Number of the resource's informers (one per configured namespace, usually 1) that completed their initial list and whose list/watch calls are not failing.", res...)
	c.resourcePhase = d("resource_phase", "Number of the resource's informers in each phase (a state set when there is one informer).", "cluster", "resource", "phase")
	c.objects = d("objects", "Objects of the resource currently held in the cluster's cache.", res...)
	c.watchConnected = d("watch_connected", "Number of open watch streams of the resource (1 per informer when healthy).", res...)
	c.lastEvent = d("last_event_timestamp_seconds", "Unix time at which the last watch event (bookmarks included) for the resource arrived.", res...)
	c.lastBookmark = d("last_bookmark_timestamp_seconds", "Unix time at which the last watch bookmark for the resource arrived; the apiserver sends one about every minute on an idle watch.", res...)
	c.lastList = d("last_list_timestamp_seconds", "Unix time at which the last successful list (or watch-list initial stream) of the resource completed.", res...)
	c.initialSyncDuration = d("initial_sync_duration_seconds", "Seconds from the informer's start to its first complete list; absent until then.", res...)
	c.lists = d("lists_total", "List calls (and watch-list initial streams) made for the resource, including failed ones; a watch-list stream the apiserver refuses is counted in watch_list_fallbacks_total instead.", res...)
	c.listErrors = d("list_errors_total", "List calls for the resource that failed.", res...)
	c.relists = d("relists_total", "Complete lists (every page, or a watch-list's initial events) after the informer's first one: the informer lost its watch position (410 Gone, errors) and listed everything again.", res...)
	c.watchStarts = d("watch_starts_total", "Watch streams opened for the resource.", res...)
	c.watchErrors = d("watch_errors_total", "Watch calls for the resource that failed, plus ERROR events received on open streams.", res...)
	c.watchListFallbacks = d("watch_list_fallbacks_total", "Watch-list streams (the informer's list as a stream) the apiserver refused because it does not serve them (422 naming sendInitialEvents: the WatchList feature gate is off, or the apiserver predates it), after each of which the informer listed instead. Not errors, and not counted in lists_total or the error counters: an old cluster refuses one at every informer start and relist.", res...)
	c.events = d("events_total", "Watch events received for the resource, by type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR); includes the initial events of watch-list streams.", "cluster", "resource", "type")
	c.listDuration = d("list_duration_seconds", "Duration of successful list calls (and watch-list initial streams) for the resource.", res...)
	c.staleness = d("staleness_seconds", "Upper bound on how far the resource's cache is behind the apiserver, now: seconds since the newest freshness probe whose revision the cache has reached was sent. Sound whatever the network delays and clocks; a busy resource reads about the probe interval times the number of busy resources of its cluster at most, an idle one up to cluster.idleProofInterval. Absent until the first probe is reached.", res...)
	c.syncLag = d("sync_lag_seconds", "For each freshness probe, seconds from sending it until the resource's cache held the revision it returned (by a watch event or bookmark): an upper bound on the lag of every change made before the probe.", res...)
	c.rvLag = d("resource_version_lag", "Revisions between the newest revision a freshness probe returned and the newest one the resource's cache has seen.", res...)
	for _, p := range clusters.Phases {
		c.phaseLabels = append(c.phaseLabels, labelPair("phase", string(p)))
	}
	for _, t := range eventTypes {
		c.eventLabels = append(c.eventLabels, labelPair("type", t))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// eventTypes are the watch event types counted in events_total.
var eventTypes = []string{"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"}

// Collect implements prometheus.Collector. With ClusterSeriesOnly it reads the clusters'
// summaries only; otherwise every resource's status, and the cluster-level series from
// the same snapshot.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.opts.Budget != nil {
		ch <- prometheus.MustNewConstMetric(c.intervalScale, prometheus.GaugeValue, c.opts.Budget.Scale())
	}
	if c.opts.ClusterSeriesOnly {
		for _, s := range c.src.Summaries() {
			c.collectCluster(ch, s)
		}
		return
	}
	for _, cs := range c.src.Status() {
		c.collectCluster(ch, cs.Summary())
		c.collectResources(ch, cs)
	}
}

// batch hands out a scrape's samples from slabs, so that a series costs no allocation of
// its own beyond what the registry makes.
type batch struct {
	ch      chan<- prometheus.Metric
	samples []sample
}

func (b *batch) send(d *prometheus.Desc, labels []*dto.LabelPair, v float64, counter bool) {
	if len(b.samples) == cap(b.samples) {
		b.samples = make([]sample, 0, 64)
	}
	b.samples = append(b.samples, sample{desc: d, labels: labels, value: v, counter: counter})
	b.ch <- &b.samples[len(b.samples)-1]
}

func (b *batch) gauge(d *prometheus.Desc, v float64, labels []*dto.LabelPair) {
	b.send(d, labels, v, false)
}

func (b *batch) counter(d *prometheus.Desc, v uint64, labels []*dto.LabelPair) {
	b.send(d, labels, float64(v), true)
}

func (c *Collector) collectCluster(ch chan<- prometheus.Metric, s clusters.ClusterSummary) {
	b := batch{ch: ch, samples: make([]sample, 0, 12+len(clusters.Phases))}
	cl := labelPair("cluster", s.Name)
	l := []*dto.LabelPair{cl}
	b.gauge(c.clusterInfo, 1, []*dto.LabelPair{cl, labelPair("server", s.Server), labelPair("version", s.Version)})
	b.gauge(c.clusterObjects, float64(s.Objects), l)
	if s.Proven {
		b.gauge(c.clusterStaleness, s.StalenessSeconds, l)
	}
	b.gauge(c.clusterSynced, b2f(s.Phase == clusters.PhaseSynced), l)
	phases := make([]*dto.LabelPair, 2*len(clusters.Phases))
	for i, p := range clusters.Phases {
		pl := phases[2*i : 2*i+2 : 2*i+2]
		pl[0], pl[1] = cl, c.phaseLabels[i]
		b.gauge(c.clusterPhase, b2f(s.Phase == p), pl)
	}
	b.counter(c.connResets, s.ConnectionResets, l)
	b.counter(c.probes, s.Probes, l)
	b.counter(c.discoveryRequests, s.DiscoveryRequests, l)
	if !s.LastProbeTime.IsZero() {
		b.gauge(c.lastProbe, unix(s.LastProbeTime), l)
	}
	if !s.InitialSyncTime.IsZero() {
		b.gauge(c.clusterInitialSync, unix(s.InitialSyncTime), l)
	}
}

// maxPhases bounds clusters.Phases for aggregate's fixed array (no map per resource).
const maxPhases = 16

func init() {
	if len(clusters.Phases) > maxPhases {
		panic("metrics: more phases than maxPhases")
	}
}

// aggregate sums one resource's informers (several when namespaces are configured).
type aggregate struct {
	synced, objects, watches, rvLag     float64
	phases                              [maxPhases]float64 // by index in clusters.Phases
	lastEvent, lastBookmark, lastList   float64
	initialSync, staleness              float64
	lists, listErrors, relists          uint64
	watchStarts, watchErrors, fallbacks uint64
	events                              [5]uint64 // by index in eventTypes
	listDuration, syncLag               clusters.Histogram
	informers                           int
	hasInitialSync, hasInformer, probed bool
	unproven                            bool // some informer has no staleness bound yet
}

func (a *aggregate) add(r *clusters.ResourceStatus) {
	for i, p := range clusters.Phases {
		if r.Phase == p {
			a.phases[i]++
		}
	}
	a.synced += b2f(r.Phase == clusters.PhaseSynced)
	a.objects += float64(r.Objects)
	a.watches += b2f(r.WatchConnected)
	if r.Phase == clusters.PhaseNotServed {
		return // no informer: no call counters
	}
	a.hasInformer = true
	k := &r.Counters
	if r.LastEventTime != nil {
		a.lastEvent = max(a.lastEvent, unix(*r.LastEventTime))
	}
	if k.LastBookmarkTime != nil {
		a.lastBookmark = max(a.lastBookmark, unix(*k.LastBookmarkTime))
	}
	if r.LastListTime != nil {
		a.lastList = max(a.lastList, unix(*r.LastListTime))
	}
	if k.InitialSyncDuration > 0 {
		a.initialSync, a.hasInitialSync = max(a.initialSync, k.InitialSyncDuration.Seconds()), true
	}
	a.lists += k.Lists
	a.listErrors += k.ListErrors
	a.relists += k.Relists
	a.watchStarts += k.WatchStarts
	a.watchErrors += k.WatchErrors
	a.fallbacks += k.WatchListFallbacks
	for i, t := range eventTypes {
		a.events[i] += k.Events[t]
	}
	a.informers++
	if a.informers == 1 {
		// Snapshots are read-only and shared: one informer's are used as they are.
		a.listDuration, a.syncLag = k.ListDuration, k.SyncLag
	} else {
		a.listDuration, a.syncLag = merged(a.listDuration, k.ListDuration), merged(a.syncLag, k.SyncLag)
	}
	if r.StalenessSeconds != nil {
		a.staleness = max(a.staleness, *r.StalenessSeconds)
	} else {
		a.unproven = true
	}
	if k.Probed {
		a.rvLag += float64(k.ResourceVersionLag)
		a.probed = true
	}
}

// merged is the sum of two histograms, in a new one (snapshots are shared).
func merged(a, h clusters.Histogram) clusters.Histogram {
	out := clusters.Histogram{Buckets: make(map[float64]uint64, len(a.Buckets)), Count: a.Count + h.Count, Sum: a.Sum + h.Sum}
	for b, n := range a.Buckets {
		out.Buckets[b] += n
	}
	for b, n := range h.Buckets {
		out.Buckets[b] += n
	}
	return out
}

func unix(t interface{ UnixNano() int64 }) float64 { return float64(t.UnixNano()) / 1e9 }

// collectResources exports cs's per-resource series, one set per resource (its
// informers, one per configured namespace, summed).
func (c *Collector) collectResources(ch chan<- prometheus.Metric, cs clusters.ClusterStatus) {
	rs := cs.Resources
	if !sort.SliceIsSorted(rs, func(i, j int) bool { return rs[i].Resource < rs[j].Resource }) {
		rs = append([]clusters.ResourceStatus(nil), rs...)
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].Resource < rs[j].Resource })
	}
	b := batch{ch: ch}
	cl := labelPair("cluster", cs.Name)
	for i := 0; i < len(rs); {
		var a aggregate
		res := rs[i].Resource
		for ; i < len(rs) && rs[i].Resource == res; i++ {
			a.add(&rs[i])
		}
		rl := labelPair("resource", res)
		// The label sets of this resource's series, sorted by name: cluster, phase,
		// resource, type.
		labels := make([]*dto.LabelPair, 2+3*len(clusters.Phases)+3*len(eventTypes))
		l := labels[0:2:2]
		l[0], l[1] = cl, rl
		rest := labels[2:]
		b.gauge(c.resourceSynced, a.synced, l)
		b.gauge(c.objects, a.objects, l)
		b.gauge(c.watchConnected, a.watches, l)
		for i := range clusters.Phases {
			pl := rest[0:3:3]
			pl[0], pl[1], pl[2] = cl, c.phaseLabels[i], rl
			rest = rest[3:]
			b.gauge(c.resourcePhase, a.phases[i], pl)
		}
		if !a.hasInformer {
			continue
		}
		if a.lastEvent > 0 {
			b.gauge(c.lastEvent, a.lastEvent, l)
		}
		if a.lastBookmark > 0 {
			b.gauge(c.lastBookmark, a.lastBookmark, l)
		}
		if a.lastList > 0 {
			b.gauge(c.lastList, a.lastList, l)
		}
		if a.hasInitialSync {
			b.gauge(c.initialSyncDuration, a.initialSync, l)
		}
		if a.probed {
			b.gauge(c.rvLag, a.rvLag, l)
		}
		if !a.unproven {
			b.gauge(c.staleness, a.staleness, l)
		}
		b.counter(c.lists, a.lists, l)
		b.counter(c.listErrors, a.listErrors, l)
		b.counter(c.relists, a.relists, l)
		b.counter(c.watchStarts, a.watchStarts, l)
		b.counter(c.watchErrors, a.watchErrors, l)
		b.counter(c.watchListFallbacks, a.fallbacks, l)
		for i := range eventTypes {
			el := rest[0:3:3]
			el[0], el[1], el[2] = cl, rl, c.eventLabels[i]
			rest = rest[3:]
			b.counter(c.events, a.events[i], el)
		}
		ch <- newHistogram(c.listDuration, a.listDuration, l)
		ch <- newHistogram(c.syncLag, a.syncLag, l)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
