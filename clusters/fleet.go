package clusters

import (
	"context"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/internal/filewatch"
)

// FleetOptions configure a Fleet. Zero values mean defaults.
type FleetOptions struct {
	// Cluster options shared by every cluster.
	Cluster Options
	// ReloadInterval is how often the source's files are checked for changes. Default 2s.
	ReloadInterval time.Duration
	// StopTimeout bounds how long a removed or restarted cluster may take to stop.
	// Default 10s.
	StopTimeout time.Duration
	Logger      *zap.Logger
}

// Fleet runs one Cluster per target of its Source and keeps the set in line with it:
// on Reload (or when a watched file changes) new targets start, removed ones stop and
// their objects leave the cache, changed ones restart, and unchanged ones are untouched.
type Fleet struct {
	source Source
	opts   FleetOptions
	log    *zap.Logger
	reload chan struct{}

	mu       sync.RWMutex
	clusters map[string]*running
	loaded   bool // the source was read successfully at least once
	loadErr  error
}

type running struct {
	cluster *Cluster
	cancel  context.CancelFunc
}

// NewFleet returns a fleet that starts when Start is called.
func NewFleet(source Source, opts FleetOptions) *Fleet {
	if opts.ReloadInterval == 0 {
		opts.ReloadInterval = 2 * time.Second
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	opts.Cluster.Logger = opts.Logger
	f := &Fleet{source: source, opts: opts, log: opts.Logger, reload: make(chan struct{}, 1), clusters: map[string]*running{}}
	if h := opts.Cluster.Handler; h != nil {
		h.OnFleet(f) // before anything can ask the handler
	}
	return f
}

var _ FleetView = (*Fleet)(nil)

// Reload asks the fleet to read its source again (e.g. on SIGHUP).
func (f *Fleet) Reload() {
	select {
	case f.reload <- struct{}{}:
	default:
	}
}

// Start runs the fleet until ctx ends, then stops every cluster (each bounded by the stop
// timeout) and returns. A source that fails to load is reported by LoadError and retried
// on the next change; the clusters already running keep running.
func (f *Fleet) Start(ctx context.Context) error {
	var files func() []string
	var since filewatch.Stamp
	if fs, ok := f.source.(FileSource); ok {
		files = fs.Files
		since = filewatch.StampOf(files()...) // before apply reads them: no change is missed
		go filewatch.Poll(ctx, f.opts.ReloadInterval, since, files, func() {
			f.log.Info("kubeconfig changed; reloading")
			f.Reload()
		})
	}
	f.apply(ctx)
	go f.releaseAfterInitialSync(ctx)
	for {
		select {
		case <-ctx.Done():
			f.stopAll()
			return nil
		case <-f.reload:
			f.log.Info("reloading cluster sources")
			f.apply(ctx)
		}
	}
}

func (f *Fleet) apply(ctx context.Context) {
	targets, err := f.source.Targets()
	f.mu.Lock()
	f.loadErr = err
	f.loaded = f.loaded || err == nil
	f.mu.Unlock()
	if err != nil {
		f.log.Error("cannot load clusters; keeping the running ones", zap.Error(err))
		return
	}
	want := map[string]Target{}
	for _, t := range targets {
		want[t.Name] = t
	}

	f.mu.Lock()
	var stop []*running
	for name, r := range f.clusters {
		t, ok := want[name]
		if !ok || t.Fingerprint != r.cluster.target.Fingerprint {
			stop = append(stop, r)
			delete(f.clusters, name)
			reason := "removed from the kubeconfig"
			if ok {
				reason = "its kubeconfig entry changed; restarting"
			}
			f.log.Info("stopping cluster", zap.String("cluster", name), zap.String("why", reason))
		}
	}
	for _, t := range targets {
		if _, ok := f.clusters[t.Name]; ok {
			continue
		}
		opts := f.opts.Cluster
		c := New(t, opts)
		cctx, cancel := context.WithCancel(ctx)
		f.clusters[t.Name] = &running{cluster: c, cancel: cancel}
		go func() { _ = c.Start(cctx) }()
	}
	f.mu.Unlock()
	f.stopClusters(stop)
}

// stopClusters cancels each cluster and waits for it, at most StopTimeout each, in
// parallel: a hung cluster cannot hold up the others.
func (f *Fleet) stopClusters(rs []*running) {
	var wg sync.WaitGroup
	for _, r := range rs {
		r.cancel()
		wg.Go(func() {
			select {
			case <-r.cluster.Done():
			case <-time.After(f.opts.StopTimeout):
				f.log.Warn("cluster did not stop in time; abandoning it", zap.String("cluster", r.cluster.Name()), zap.Duration("timeout", f.opts.StopTimeout))
			}
		})
	}
	wg.Wait()
}

func (f *Fleet) stopAll() {
	f.mu.Lock()
	var rs []*running
	for name, r := range f.clusters {
		rs = append(rs, r)
		delete(f.clusters, name)
	}
	f.mu.Unlock()
	f.stopClusters(rs)
}

// Clusters returns the running clusters sorted by name.
func (f *Fleet) Clusters() []*Cluster {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*Cluster, 0, len(f.clusters))
	for _, r := range f.clusters {
		out = append(out, r.cluster)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Cluster returns the named cluster, or nil.
func (f *Fleet) Cluster(name string) *Cluster {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if r, ok := f.clusters[name]; ok {
		return r.cluster
	}
	return nil
}

// Names returns the running clusters' names, sorted. Cheaper than Status.
func (f *Fleet) Names() []string {
	f.mu.RLock()
	out := make([]string, 0, len(f.clusters))
	for name := range f.clusters {
		out = append(out, name)
	}
	f.mu.RUnlock()
	sort.Strings(out)
	return out
}

// ClusterStatus returns one cluster's status.
func (f *Fleet) ClusterStatus(name string) (ClusterStatus, bool) {
	c := f.Cluster(name)
	if c == nil {
		return ClusterStatus{}, false
	}
	return c.Status(), true
}

// Status returns every cluster's status, sorted by name.
func (f *Fleet) Status() []ClusterStatus {
	cs := f.Clusters()
	out := make([]ClusterStatus, len(cs))
	for i, c := range cs {
		out[i] = c.Status()
	}
	return out
}

// LoadError is the error of the last source load, if it failed.
func (f *Fleet) LoadError() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.loadErr
}

// Loaded reports whether the cluster source has been read successfully: before that the
// fleet is empty because nothing is known yet, not because it has no clusters.
func (f *Fleet) Loaded() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.loaded
}

// Freshness returns how current the named cluster's cache of resource is.
func (f *Fleet) Freshness(cluster, resource string) (Freshness, bool) {
	c := f.Cluster(cluster)
	if c == nil {
		return Freshness{}, false
	}
	return c.Freshness(resource), true
}

// Version returns the named cluster's apiserver version ("" until the first probe
// read it), and whether there is such a cluster.
func (f *Fleet) Version(cluster string) (string, bool) {
	c := f.Cluster(cluster)
	if c == nil {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version, true
}

// Readiness is what a readiness policy needs to know of one cluster.
type Readiness struct {
	Name string
	Condition
	// Synced is true when the cluster is Synced now; EverSynced when it completed its
	// initial sync at some point.
	Synced, EverSynced bool
	// Settled is true once the cluster has synced, or given up waiting for it
	// (InitialSyncTimeout), or cannot be used (Invalid).
	Settled bool
}

// Readiness returns every cluster's readiness, sorted by name, without copying statuses.
func (f *Fleet) Readiness() []Readiness {
	cs := f.Clusters()
	out := make([]Readiness, len(cs))
	for i, c := range cs {
		c.mu.Lock()
		out[i] = Readiness{Name: c.target.Name, Condition: c.cond, Synced: c.cond.Phase == PhaseSynced, EverSynced: !c.initialSync.IsZero()}
		c.mu.Unlock()
		out[i].Settled = c.settled()
	}
	return out
}

func (c *Cluster) settled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.initialSync.IsZero() || c.target.Err != nil {
		return true
	}
	return !c.started.IsZero() && c.opts.Clock.Since(c.started) > c.opts.InitialSyncTimeout
}

// releaseAfterInitialSync returns the memory the initial sync used to the operating
// system once, when every cluster of the first load has settled (synced, or past its
// initial sync timeout). The lists' garbage is by then collected, but the runtime hands
// the freed pages back only gradually (minutes, at 1,000 clusters); until then the RSS
// reads up to half again the steady state. It costs one full collection (BENCHMARKS.md,
// issue #15); clusters added later are not waited for.
func (f *Fleet) releaseAfterInitialSync(ctx context.Context) {
	tick := time.NewTicker(f.opts.ReloadInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rs := f.Readiness()
		if !f.Loaded() || len(rs) == 0 {
			continue
		}
		settled := true
		for _, r := range rs {
			settled = settled && r.Settled
		}
		if !settled {
			continue
		}
		start := time.Now()
		debug.FreeOSMemory()
		f.log.Info("initial sync complete; returned its memory to the operating system",
			zap.Int("clusters", len(rs)), zap.Duration("took", time.Since(start)))
		return
	}
}
