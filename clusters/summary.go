package clusters

import "time"

// ClusterSummary is a cluster's state without its resources' details: what the
// cluster-level metrics and a fleet overview need. Cluster.Summary reads it without
// building any resource's status (no counters, histograms or conditions copied), so a
// fleet of 1,000 clusters is summarized in about the time it takes to take 14,000 locks.
type ClusterSummary struct {
	Condition
	Name    string
	Server  string
	Version string // "" until the first successful probe
	// InitialSyncTime and LastProbeTime are zero until they happen.
	InitialSyncTime time.Time
	LastProbeTime   time.Time
	// Objects is the number of objects cached, all resources together.
	Objects int
	// StalenessSeconds is the largest staleness bound of the cluster's served resources,
	// valid when Proven (every served resource has one).
	StalenessSeconds float64
	Proven           bool

	ConnectionResets, Probes, DiscoveryRequests uint64
}

// Summary returns the cluster's summary: the same figures as Status's cluster-level
// fields, read now.
func (c *Cluster) Summary() ClusterSummary {
	c.mu.Lock()
	s := ClusterSummary{
		Condition: c.cond, Name: c.target.Name, Version: c.version,
		InitialSyncTime: c.initialSync, LastProbeTime: c.lastProbe,
	}
	if c.target.Config != nil {
		s.Server = c.target.Config.Host
	}
	var buf [16]*resourceCache // on the stack for the usual resource count
	rcs := buf[:0]
	for _, rc := range c.resources {
		rcs = append(rcs, rc)
	}
	c.mu.Unlock()
	s.ConnectionResets, s.Probes, s.DiscoveryRequests = c.connResets.Load(), c.probes.Load(), c.discoveryRequests.Load()
	now := c.opts.Clock.Now()
	s.Proven = len(rcs) > 0
	for _, rc := range rcs {
		rc.mu.Lock()
		s.Objects += rc.objectsNow()
		st, ok := rc.stalenessNow(now)
		notServed := rc.cond.Phase == PhaseNotServed
		rc.mu.Unlock()
		switch {
		case notServed:
		case !ok:
			s.Proven = false
		default:
			s.StalenessSeconds = max(s.StalenessSeconds, st.Seconds())
		}
	}
	if !s.Proven {
		s.StalenessSeconds = 0
	}
	return s
}

// objectsNow is the number of objects the resource's cache holds; rc.mu is held.
func (rc *resourceCache) objectsNow() int {
	if rc.facts.stopped || rc.informer == nil {
		return 0
	}
	return int(rc.objects.Load())
}

// stalenessNow is the resource's staleness bound at now; false when there is none (never
// proven, or stopped). rc.mu is held.
func (rc *resourceCache) stalenessNow(now time.Time) (time.Duration, bool) {
	if rc.facts.stopped {
		return 0, false
	}
	return rc.proof.staleness(now)
}

// Summary is the cluster-level part of the status, as Cluster.Summary reports it.
func (s ClusterStatus) Summary() ClusterSummary {
	out := ClusterSummary{
		Condition: s.Condition, Name: s.Name, Server: s.Server, Version: s.Version, Objects: s.Objects(),
		ConnectionResets: s.ConnectionResets, Probes: s.Probes, DiscoveryRequests: s.DiscoveryRequests,
	}
	if s.InitialSyncTime != nil {
		out.InitialSyncTime = *s.InitialSyncTime
	}
	if s.LastProbeTime != nil {
		out.LastProbeTime = *s.LastProbeTime
	}
	if s.StalenessSeconds != nil {
		out.StalenessSeconds, out.Proven = *s.StalenessSeconds, true
	}
	return out
}

// Summaries returns every cluster's summary, sorted by name.
func (f *Fleet) Summaries() []ClusterSummary {
	cs := f.Clusters()
	out := make([]ClusterSummary, len(cs))
	for i, c := range cs {
		out[i] = c.Summary()
	}
	return out
}
