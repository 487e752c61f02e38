// Package metrics exports fleetcache's state to Prometheus. Values are computed at scrape
// time from the clusters' status, so a removed cluster's series disappear with it.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetcache/fleetcache/clusters"
)

// StatusSource is what the collector reads.
type StatusSource interface {
	Status() []clusters.ClusterStatus
}

// Collector turns cluster and resource status into metrics.
type Collector struct {
	src StatusSource

	info, clusterSynced, clusterPhase, resourceSynced, resourcePhase, objects, watchConnected,
	lastEvent, lastList, initialSync *prometheus.Desc
}

// NewCollector returns a collector over src; register it with a Registerer.
func NewCollector(src StatusSource) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("fleetcache_"+name, help, labels, nil)
	}
	return &Collector{
		src:            src,
		info:           d("cluster_info", "Constant 1 per cached cluster, labelled with its apiserver URL and git version (empty until the first successful probe).", "cluster", "server", "version"),
		clusterSynced:  d("cluster_synced", "1 if every cached resource of the cluster is Synced (or not served by it) and its apiserver answers the health probe, else 0.", "cluster"),
		clusterPhase:   d("cluster_phase", "The cluster's phase as a state set: 1 for the current phase, 0 for the others.", "cluster", "phase"),
		resourceSynced: d("resource_synced", "1 if the resource's informer has completed its initial list and its list/watch calls are not failing, else 0. Summed over namespaces when a resource is cached per namespace.", "cluster", "resource"),
		resourcePhase:  d("resource_phase", "Number of informers of the resource (one per configured namespace, usually 1) in each phase.", "cluster", "resource", "phase"),
		objects:        d("objects", "Objects currently held in the cache for the cluster and resource.", "cluster", "resource"),
		watchConnected: d("watch_connected", "Number of open watch streams for the cluster and resource (1 per informer when healthy).", "cluster", "resource"),
		lastEvent:      d("last_event_timestamp_seconds", "Unix time at which the last watch event (bookmarks included) for the cluster and resource was received; absent before the first.", "cluster", "resource"),
		lastList:       d("last_list_timestamp_seconds", "Unix time at which the last successful list (or watch-list initial stream) for the cluster and resource completed; absent before the first.", "cluster", "resource"),
		initialSync:    d("initial_sync_timestamp_seconds", "Unix time at which the cluster first had every resource synced; absent until then.", "cluster"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.clusterSynced, c.clusterPhase, c.resourceSynced, c.resourcePhase, c.objects, c.watchConnected, c.lastEvent, c.lastList, c.initialSync} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, cs := range c.src.Status() {
		gauge(c.info, 1, cs.Name, cs.Server, cs.Version)
		gauge(c.clusterSynced, b2f(cs.Phase == clusters.PhaseSynced), cs.Name)
		for _, p := range clusters.Phases {
			gauge(c.clusterPhase, b2f(cs.Phase == p), cs.Name, string(p))
		}
		if cs.InitialSyncTime != nil {
			gauge(c.initialSync, float64(cs.InitialSyncTime.UnixNano())/1e9, cs.Name)
		}
		type agg struct {
			synced, objects, watches float64
			phases                   map[clusters.Phase]float64
			lastEvent, lastList      float64
		}
		byRes := map[string]*agg{}
		var order []string
		for _, r := range cs.Resources {
			a := byRes[r.Resource]
			if a == nil {
				a = &agg{phases: map[clusters.Phase]float64{}}
				byRes[r.Resource] = a
				order = append(order, r.Resource)
			}
			a.synced += b2f(r.Phase == clusters.PhaseSynced)
			a.objects += float64(r.Objects)
			a.watches += b2f(r.WatchConnected)
			a.phases[r.Phase]++
			if r.LastEventTime != nil {
				a.lastEvent = max(a.lastEvent, float64(r.LastEventTime.UnixNano())/1e9)
			}
			if r.LastListTime != nil {
				a.lastList = max(a.lastList, float64(r.LastListTime.UnixNano())/1e9)
			}
		}
		for _, res := range order {
			a := byRes[res]
			gauge(c.resourceSynced, a.synced, cs.Name, res)
			gauge(c.objects, a.objects, cs.Name, res)
			gauge(c.watchConnected, a.watches, cs.Name, res)
			for _, p := range clusters.Phases {
				gauge(c.resourcePhase, a.phases[p], cs.Name, res, string(p))
			}
			if a.lastEvent > 0 {
				gauge(c.lastEvent, a.lastEvent, cs.Name, res)
			}
			if a.lastList > 0 {
				gauge(c.lastList, a.lastList, cs.Name, res)
			}
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
