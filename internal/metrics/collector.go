// Package metrics exports fleetcache's state to Prometheus. Values are computed at scrape
// time from the clusters' status, so a removed cluster's series disappear with it.
package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetcache/fleetcache/clusters"
)

// StatusSource is what the collector reads.
type StatusSource interface {
	Status() []clusters.ClusterStatus
}

// Options choose what the collector exports.
type Options struct {
	// ClusterSeriesOnly drops every per-resource series: about 14 series per cluster
	// remain instead of about 100 per cluster and resource (README: Metrics), for fleets
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
	initialSyncDuration, lists, listErrors, relists, watchStarts, watchErrors, events, listDuration,
	staleness, syncLag, rvLag *prometheus.Desc
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
	c.lists = d("lists_total", "List calls (and watch-list initial streams) made for the resource, including failed ones.", res...)
	c.listErrors = d("list_errors_total", "List calls for the resource that failed.", res...)
	c.relists = d("relists_total", "Successful lists after the informer's first one: the informer lost its watch position (410 Gone, errors) and listed everything again.", res...)
	c.watchStarts = d("watch_starts_total", "Watch streams opened for the resource.", res...)
	c.watchErrors = d("watch_errors_total", "Watch calls for the resource that failed, plus ERROR events received on open streams.", res...)
	c.events = d("events_total", "Watch events received for the resource, by type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR); includes the initial events of watch-list streams.", "cluster", "resource", "type")
	c.listDuration = d("list_duration_seconds", "Duration of successful list calls (and watch-list initial streams) for the resource.", res...)
	c.staleness = d("staleness_seconds", "Upper bound on how far the resource's cache is behind the apiserver, now: seconds since the newest freshness probe whose revision the cache has reached was sent. Sound whatever the network delays and clocks; a busy resource reads about the probe interval at most, an idle one up to cluster.idleProofInterval. Absent until the first probe is reached.", res...)
	c.syncLag = d("sync_lag_seconds", "For each freshness probe, seconds from sending it until the resource's cache held the revision it returned (by a watch event or bookmark): an upper bound on the lag of every change made before the probe.", res...)
	c.rvLag = d("resource_version_lag", "Revisions between the newest revision a freshness probe returned and the newest one the resource's cache has seen.", res...)
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// aggregate sums one resource's informers (several when namespaces are configured).
type aggregate struct {
	synced, objects, watches, rvLag     float64
	phases                              map[clusters.Phase]float64
	lastEvent, lastBookmark, lastList   float64
	initialSync, staleness              float64
	lists, listErrors, relists          uint64
	watchStarts, watchErrors            uint64
	events                              map[string]uint64
	listDuration, syncLag               clusters.Histogram
	hasInitialSync, hasInformer, probed bool
	unproven                            bool // some informer has no staleness bound yet
}

func merge(into *clusters.Histogram, h clusters.Histogram) {
	if into.Buckets == nil {
		into.Buckets = map[float64]uint64{}
	}
	for b, n := range h.Buckets {
		into.Buckets[b] += n
	}
	into.Count += h.Count
	into.Sum += h.Sum
}

func unix(t interface{ UnixNano() int64 }) float64 { return float64(t.UnixNano()) / 1e9 }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	hist := func(d *prometheus.Desc, h clusters.Histogram, labels ...string) {
		ch <- prometheus.MustNewConstHistogram(d, h.Count, h.Sum, h.Buckets, labels...)
	}
	if c.opts.Budget != nil {
		gauge(c.intervalScale, c.opts.Budget.Scale())
	}
	for _, cs := range c.src.Status() {
		gauge(c.clusterInfo, 1, cs.Name, cs.Server, cs.Version)
		objects := 0
		for _, r := range cs.Resources {
			objects += r.Objects
		}
		gauge(c.clusterObjects, float64(objects), cs.Name)
		if cs.StalenessSeconds != nil {
			gauge(c.clusterStaleness, *cs.StalenessSeconds, cs.Name)
		}
		gauge(c.clusterSynced, b2f(cs.Phase == clusters.PhaseSynced), cs.Name)
		for _, p := range clusters.Phases {
			gauge(c.clusterPhase, b2f(cs.Phase == p), cs.Name, string(p))
		}
		counter(c.connResets, cs.ConnectionResets, cs.Name)
		counter(c.probes, cs.Probes, cs.Name)
		counter(c.discoveryRequests, cs.DiscoveryRequests, cs.Name)
		if cs.LastProbeTime != nil {
			gauge(c.lastProbe, unix(cs.LastProbeTime), cs.Name)
		}
		if cs.InitialSyncTime != nil {
			gauge(c.clusterInitialSync, unix(cs.InitialSyncTime), cs.Name)
		}
		if c.opts.ClusterSeriesOnly {
			continue
		}

		byRes := map[string]*aggregate{}
		for _, r := range cs.Resources {
			a := byRes[r.Resource]
			if a == nil {
				a = &aggregate{phases: map[clusters.Phase]float64{}, events: map[string]uint64{}}
				byRes[r.Resource] = a
			}
			a.phases[r.Phase]++
			a.synced += b2f(r.Phase == clusters.PhaseSynced)
			a.objects += float64(r.Objects)
			a.watches += b2f(r.WatchConnected)
			if r.Phase == clusters.PhaseNotServed {
				continue // no informer: no call counters
			}
			a.hasInformer = true
			k := r.Counters
			if r.LastEventTime != nil {
				a.lastEvent = max(a.lastEvent, unix(r.LastEventTime))
			}
			if k.LastBookmarkTime != nil {
				a.lastBookmark = max(a.lastBookmark, unix(k.LastBookmarkTime))
			}
			if r.LastListTime != nil {
				a.lastList = max(a.lastList, unix(r.LastListTime))
			}
			if k.InitialSyncDuration > 0 {
				a.initialSync, a.hasInitialSync = max(a.initialSync, k.InitialSyncDuration.Seconds()), true
			}
			a.lists += k.Lists
			a.listErrors += k.ListErrors
			a.relists += k.Relists
			a.watchStarts += k.WatchStarts
			a.watchErrors += k.WatchErrors
			for t, n := range k.Events {
				a.events[t] += n
			}
			merge(&a.listDuration, k.ListDuration)
			merge(&a.syncLag, k.SyncLag)
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
		names := make([]string, 0, len(byRes))
		for n := range byRes {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, res := range names {
			a := byRes[res]
			l := []string{cs.Name, res}
			gauge(c.resourceSynced, a.synced, l...)
			gauge(c.objects, a.objects, l...)
			gauge(c.watchConnected, a.watches, l...)
			for _, p := range clusters.Phases {
				gauge(c.resourcePhase, a.phases[p], cs.Name, res, string(p))
			}
			if !a.hasInformer {
				continue
			}
			if a.lastEvent > 0 {
				gauge(c.lastEvent, a.lastEvent, l...)
			}
			if a.lastBookmark > 0 {
				gauge(c.lastBookmark, a.lastBookmark, l...)
			}
			if a.lastList > 0 {
				gauge(c.lastList, a.lastList, l...)
			}
			if a.hasInitialSync {
				gauge(c.initialSyncDuration, a.initialSync, l...)
			}
			if a.probed {
				gauge(c.rvLag, a.rvLag, l...)
			}
			if !a.unproven {
				gauge(c.staleness, a.staleness, l...)
			}
			counter(c.lists, a.lists, l...)
			counter(c.listErrors, a.listErrors, l...)
			counter(c.relists, a.relists, l...)
			counter(c.watchStarts, a.watchStarts, l...)
			counter(c.watchErrors, a.watchErrors, l...)
			for _, t := range []string{"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"} {
				counter(c.events, a.events[t], cs.Name, res, t)
			}
			hist(c.listDuration, a.listDuration, l...)
			hist(c.syncLag, a.syncLag, l...)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
