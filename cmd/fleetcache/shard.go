package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/config"
	"github.com/fleetcache/fleetcache/internal/sharding"
)

// shard is this replica's place in a sharded group: its membership, the part of the
// fleet's source it owns, and how it recognises its peers' requests.
type shard struct {
	members  *sharding.Membership
	source   *sharding.Source
	peers    *sharding.PeerAuthenticator // its Inner is set with the daemon's authenticator
	handover prometheus.Histogram
}

// groupKeyWait bounds the wait for the group key at start: past it the process exits
// with the reason (in a pod, the startup probe would restart it about then anyway).
const groupKeyWait = time.Minute

// newShard reads the group key (creating its Secret if this is the group's first
// replica) and joins nothing yet; Run on members does. reload is called when the members
// change, so that the fleet picks up the clusters it gained and drops those it lost.
func newShard(ctx context.Context, cfg *config.Config, inner clusters.Source, reload func(), log *zap.Logger) (*shard, error) {
	s := cfg.Sharding
	home, err := cfg.HomeConfig()
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(home)
	if err != nil {
		return nil, fmt.Errorf("sharding: home cluster client: %w", err)
	}
	group := s.Group
	if group == "" {
		group = sharding.DefaultGroup
	}
	kctx, cancel := context.WithTimeout(ctx, groupKeyWait)
	defer cancel()
	key, err := sharding.LoadGroupKey(kctx, s.GroupKeyFile, client, s.Namespace, group, 2*time.Second, func(err error) {
		log.Warn("cannot read or create the sharding group key yet; retrying", zap.Error(err))
	})
	if err != nil {
		return nil, fmt.Errorf("sharding: %w", err)
	}
	m, err := sharding.New(sharding.Options{
		Client: client, Namespace: s.Namespace, Group: s.Group, Identity: s.Identity, Address: s.AdvertiseURL, Key: key,
		LeaseDuration: s.LeaseDuration.Duration, Replicas: s.Replicas, OnChange: reload, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	return &shard{members: m, source: &sharding.Source{Inner: inner, Owner: m},
		peers: &sharding.PeerAuthenticator{Key: key, Self: s.Identity, Logger: log.Named("sharding")},
		handover: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fleetcache_shard_handover_seconds",
			Help:    "From a change of the live replicas until every cluster this replica then owns had finished its initial sync: how long moved clusters went uncached here.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 10)})}, nil
}

// timeHandovers observes, after each membership change, how long it took until every
// cluster the fleet runs had synced once (or given up waiting, or was invalid).
func (s *shard) timeHandovers(ctx context.Context, f *clusters.Fleet) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	seen := 0
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st := s.members.Stats()
		if st.Changes != seen {
			seen, since = st.Changes, st.ChangedAt
		}
		if since.IsZero() || !s.source.Current() {
			continue
		}
		settled := true
		for _, r := range f.Readiness() {
			settled = settled && r.Settled
		}
		if settled {
			s.handover.Observe(time.Since(since).Seconds())
			since = time.Time{}
		}
	}
}

// fleet wraps the fleet for readiness: a replica is not loaded before it has joined and
// its clusters follow the current membership.
func (s *shard) fleet(f *clusters.Fleet) shardedFleet { return shardedFleet{Fleet: f, shard: s} }

type shardedFleet struct {
	*clusters.Fleet
	shard *shard
}

func (f shardedFleet) Loaded() bool { return f.Fleet.Loaded() && f.shard.source.Current() }

func (f shardedFleet) LoadError() error {
	if err := f.Fleet.LoadError(); err != nil {
		return err
	}
	if !f.shard.members.Joined() {
		return errors.New("not a member of the sharding group yet (its Lease is not written, or the peers' Leases not read)")
	}
	return nil
}

// collectors are the sharding metrics.
func (s *shard) collectors(f *clusters.Fleet) []prometheus.Collector {
	return []prometheus.Collector{
		s.handover,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetcache_shard_members",
			Help: "Live replicas of this replica's sharding group, as this replica sees them (Leases renewed within their duration)."},
			func() float64 { return float64(s.members.Stats().Members) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetcache_shard_owned_clusters",
			Help: "Clusters this replica caches: those rendezvous hashing assigns to it among the live members."},
			func() float64 { return float64(len(f.Names())) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetcache_shard_membership_changes_total",
			Help: "Times the set of live replicas changed (a replica joined, left, or its Lease expired); each may move clusters between replicas."},
			func() float64 { return float64(s.members.Stats().Changes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetcache_shard_refused_leases",
			Help: "Live Leases labelled with this replica's group that are not members because they do not prove the group key (not written by a replica of the group: see the sharding block of /api/v1/clusters)."},
			func() float64 { return float64(s.members.Stats().Refused) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetcache_shard_peer_assertions_refused_total",
			Help: "Requests refused with 401 because their replica-to-replica assertion (X-Fleetcache-Peer) did not hold: forged, expired, for another replica, or signed with another group key."},
			func() float64 { return float64(s.peers.Refused()) }),
	}
}
