package sharding

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

const (
	// GroupLabel marks the Leases of one group of replicas: they share the fleet.
	GroupLabel = "fleetcache.io/shard-group"
	// AddressAnnotation is the base URL a replica's peers reach it on.
	AddressAnnotation = "fleetcache.io/address"
	// ProofAnnotation proves that the Lease was written by a replica holding the group
	// key: base64 of the key's HMAC over the group, the Lease's name, its holder and its
	// address (leaseProof). A Lease without a valid one is not a member.
	ProofAnnotation = "fleetcache.io/proof"
)

// Defaults, with the reason next to each.
const (
	// DefaultLeaseDuration is how long a silent replica stays a member: the time its
	// clusters go unserved when it dies without a word (kill -9, node loss). Leader
	// election's usual 15s.
	DefaultLeaseDuration = 15 * time.Second
	// DefaultGroup names the Leases' group when the configuration does not.
	DefaultGroup = "fleetcache"
)

// Member is one live replica.
type Member struct {
	Identity string `json:"identity"`
	// Address is the base URL the replica serves its API on, for its peers.
	Address string `json:"address"`
}

// Options configure a Membership.
type Options struct {
	// Client reaches the home cluster, where the Leases live.
	Client    kubernetes.Interface
	Namespace string
	// Group is the label value shared by the replicas that split one fleet. Default
	// "fleetcache".
	Group string
	// Identity names this replica and its Lease; it must be a DNS subdomain and stay the
	// same across restarts (a StatefulSet pod's name). Required.
	Identity string
	// Address is this replica's base URL for its peers (e.g. http://10.0.0.7:8080).
	// Required.
	Address string
	// Key is the group key (groupkey.go): this replica proves its Lease with it, and a
	// peer's Lease counts only when it proves the same key. Required.
	Key *GroupKey
	// LeaseDuration, default 15s; RenewInterval, default a third of it.
	LeaseDuration time.Duration
	RenewInterval time.Duration
	// Replicas is how many members cache each cluster. Default 1.
	Replicas int
	// OnChange is called after the live members changed, from the membership's own
	// goroutine; it must not block.
	OnChange func()
	Logger   *zap.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// Membership holds this replica's Lease and follows its peers'.
type Membership struct {
	opts  Options
	log   *zap.Logger
	wake  chan struct{}
	lease *coordinationv1.Lease // this replica's, as last written; nil: read it again
	timer *time.Timer           // wakes the loop when the next peer's Lease expires
	// vanish makes Run return without deleting the Lease, as a killed replica would (tests).
	vanish bool

	mu          sync.RWMutex
	seen        map[string]observed // Lease name -> last change observed
	members     []Member            // live, sorted by identity
	refused     []RefusedLease      // live Leases without a valid proof, sorted by name
	lastRenewed time.Time
	synced      bool
	joined      bool // as of the last evaluate: Joined's value the members were last reported with
	changes     int
	changedAt   time.Time
}

type observed struct {
	holder, address string
	renew           *metav1.MicroTime
	duration        time.Duration
	at              time.Time // on this replica's clock
	refused         string    // why the Lease is not a member; "" when its proof holds
}

// RefusedLease is a Lease of the group that is not a member: it does not prove the group
// key. Someone who may write Leases in the namespace wrote it (or a replica with another
// key: a group split by a rotation).
type RefusedLease struct {
	Lease   string `json:"lease"`
	Holder  string `json:"holder"`
	Address string `json:"address"`
	Reason  string `json:"reason"`
}

// New checks opts and returns a Membership that joins when Run is called.
func New(opts Options) (*Membership, error) {
	if opts.Client == nil {
		return nil, errors.New("sharding: no client for the home cluster")
	}
	if opts.Namespace == "" {
		return nil, errors.New("sharding: namespace: required (where the replicas' Leases live)")
	}
	if opts.Group == "" {
		opts.Group = DefaultGroup
	}
	if errs := validation.IsDNS1123Subdomain(opts.Identity); len(errs) > 0 {
		return nil, fmt.Errorf("sharding: identity %q: %s", opts.Identity, errs[0])
	}
	if errs := validation.IsValidLabelValue(opts.Group); len(errs) > 0 {
		return nil, fmt.Errorf("sharding: group %q: %s", opts.Group, errs[0])
	}
	if opts.Address == "" {
		return nil, errors.New("sharding: address: required (the URL peers reach this replica on)")
	}
	if opts.Key == nil {
		return nil, errors.New("sharding: no group key (the replicas prove their Leases and requests with it)")
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = DefaultLeaseDuration
	}
	if opts.RenewInterval == 0 {
		opts.RenewInterval = opts.LeaseDuration / 3
	}
	if opts.RenewInterval >= opts.LeaseDuration {
		return nil, fmt.Errorf("sharding: renewInterval %s must be shorter than leaseDuration %s", opts.RenewInterval, opts.LeaseDuration)
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.Replicas < 1 {
		return nil, fmt.Errorf("sharding: replicas %d: must be at least 1", opts.Replicas)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Membership{opts: opts, log: opts.Logger.Named("sharding"), wake: make(chan struct{}, 1), seen: map[string]observed{}}, nil
}

// Identity is this replica's.
func (m *Membership) Identity() string { return m.opts.Identity }

// Replicas is how many members cache each cluster.
func (m *Membership) Replicas() int { return m.opts.Replicas }

func (m *Membership) leaseName() string { return m.opts.Group + "-" + m.opts.Identity }

// Run joins the group and keeps this replica's Lease renewed until ctx ends, then leaves
// (deletes the Lease) so that peers take its clusters over at once.
func (m *Membership) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(m.opts.Client, 0,
		informers.WithNamespace(m.opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = GroupLabel + "=" + m.opts.Group }))
	inf := factory.Coordination().V1().Leases().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.observe(obj) },
		UpdateFunc: func(_, obj any) { m.observe(obj) },
		DeleteFunc: func(obj any) { m.forget(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	// The peers' Leases first: joining before they are read would own everything for a
	// moment.
	cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)

	tick := time.NewTicker(m.opts.RenewInterval)
	defer tick.Stop()
	defer func() {
		if m.timer != nil {
			m.timer.Stop()
		}
	}()
	m.renewOrLog(ctx)
	for {
		if inf.HasSynced() {
			m.mu.Lock()
			m.synced = true
			m.mu.Unlock()
		}
		m.evaluate()
		select {
		case <-ctx.Done():
			if !m.vanish {
				m.leave()
			}
			return nil
		case <-tick.C:
			m.renewOrLog(ctx)
		case <-m.wake:
		}
	}
}

func (m *Membership) renewOrLog(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, m.opts.RenewInterval)
	defer cancel()
	if err := m.renew(rctx); err != nil && ctx.Err() == nil {
		m.log.Warn("cannot renew this replica's lease", zap.String("lease", m.opts.Namespace+"/"+m.leaseName()), zap.Error(err))
	}
}

// renew writes this replica's Lease with a new renewTime; the apiserver's optimistic
// concurrency makes a stale copy fail with a conflict, after which it is read again.
func (m *Membership) renew(ctx context.Context) error {
	leases := m.opts.Client.CoordinationV1().Leases(m.opts.Namespace)
	now := metav1.NewMicroTime(m.opts.Now())
	secs := int32(m.opts.LeaseDuration / time.Second)
	if m.lease == nil {
		l, err := leases.Get(ctx, m.leaseName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: m.leaseName(), Namespace: m.opts.Namespace}}
		case err != nil:
			return fmt.Errorf("read lease: %w", err)
		}
		l.Labels = map[string]string{GroupLabel: m.opts.Group}
		// Renewals copy the annotations; one altered meanwhile makes the renewal conflict,
		// and this write sets them again.
		l.Annotations = map[string]string{AddressAnnotation: m.opts.Address,
			ProofAnnotation: leaseProof(m.opts.Key, m.opts.Group, m.leaseName(), m.opts.Identity, m.opts.Address)}
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: &m.opts.Identity, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now}
		if l.ResourceVersion == "" {
			l, err = leases.Create(ctx, l, metav1.CreateOptions{})
		} else {
			l, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("acquire lease: %w", err)
		}
		m.lease = l
		m.log.Info("joined", zap.String("lease", m.opts.Namespace+"/"+m.leaseName()), zap.String("address", m.opts.Address))
	} else {
		l := m.lease.DeepCopy()
		l.Spec.RenewTime = &now
		l, err := leases.Update(ctx, l, metav1.UpdateOptions{})
		if err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				m.lease = nil // someone else wrote or deleted it; start over from the server's copy
			}
			return fmt.Errorf("renew lease: %w", err)
		}
		m.lease = l
	}
	m.mu.Lock()
	m.lastRenewed = m.opts.Now()
	m.mu.Unlock()
	return nil
}

// leave deletes this replica's Lease, if it is still the one it wrote.
func (m *Membership) leave() {
	if m.lease == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.RenewInterval)
	defer cancel()
	uid := m.lease.UID
	err := m.opts.Client.CoordinationV1().Leases(m.opts.Namespace).Delete(ctx, m.leaseName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		m.log.Warn("cannot delete this replica's lease; peers take over when it expires", zap.Error(err))
		return
	}
	m.log.Info("left", zap.String("lease", m.opts.Namespace+"/"+m.leaseName()))
}

func (m *Membership) observe(obj any) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok || l.Spec.HolderIdentity == nil {
		return
	}
	o := observed{holder: *l.Spec.HolderIdentity, address: l.Annotations[AddressAnnotation], renew: l.Spec.RenewTime, duration: m.opts.LeaseDuration}
	if l.Spec.LeaseDurationSeconds != nil {
		o.duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	o.refused = checkLeaseProof(m.opts.Key, m.opts.Group, l.Name, o.holder, o.address, l.Annotations[ProofAnnotation])
	m.mu.Lock()
	prev, had := m.seen[l.Name]
	o.at = prev.at
	// A member is alive as long as its renewals keep coming; the renewal's own timestamp
	// is the other machine's clock, so only the moment this replica saw it counts.
	if !had || !renewEqual(prev.renew, o.renew) || prev.holder != o.holder {
		o.at = m.opts.Now()
	}
	m.seen[l.Name] = o
	m.mu.Unlock()
	// Once per change of what the Lease claims, not at every renewal of it.
	lease := zap.String("lease", l.Namespace+"/"+l.Name)
	switch {
	case o.refused != "" && (!had || prev.refused != o.refused || prev.holder != o.holder || prev.address != o.address):
		m.log.Warn("a Lease of this group does not prove the group key: it is not a member and receives no requests",
			lease, zap.String("holder", o.holder), zap.String("address", o.address), zap.String("reason", o.refused))
	case o.refused == "" && had && prev.refused != "":
		m.log.Info("a Lease refused before proves the group key now", lease, zap.String("holder", o.holder))
	}
	m.poke()
}

// leaseProof is the value of a Lease's ProofAnnotation: it binds the Lease's group, name,
// holder and address to the key, so that neither can be changed, nor the proof copied to
// another Lease, without the key. None of them can hold a NUL: the group is a label value,
// the name and holder DNS names, and the address a URL (url.Parse refuses control
// characters), so the message is unambiguous.
func leaseProof(k *GroupKey, group, lease, holder, address string) string {
	return base64.StdEncoding.EncodeToString(k.Sign(leaseProofMessage(group, lease, holder, address)))
}

func leaseProofMessage(group, lease, holder, address string) []byte {
	return []byte("fleetcache-lease\x00" + group + "\x00" + lease + "\x00" + holder + "\x00" + address)
}

// checkLeaseProof returns why a Lease's proof does not hold ("" when it does).
func checkLeaseProof(k *GroupKey, group, lease, holder, address, proof string) string {
	if proof == "" {
		return "no " + ProofAnnotation + " annotation: not written by a replica holding the group key"
	}
	sig, err := base64.StdEncoding.DecodeString(proof)
	if err != nil {
		return ProofAnnotation + " is not base64"
	}
	if !k.Verify(leaseProofMessage(group, lease, holder, address), sig) {
		return ProofAnnotation + " does not match the Lease's group, name, holder and address under this group's key (forged, altered, copied from another Lease, or written with another group key)"
	}
	return ""
}

func renewEqual(a, b *metav1.MicroTime) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

func (m *Membership) forget(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	m.mu.Lock()
	delete(m.seen, l.Name)
	m.mu.Unlock()
	m.poke()
}

func (m *Membership) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// evaluate recomputes the live members and calls OnChange when they changed. It also
// arranges to run again when the next Lease would expire.
func (m *Membership) evaluate() {
	now := m.opts.Now()
	m.mu.Lock()
	var live []Member
	var refused []RefusedLease
	next := time.Duration(0)
	selfLive := !m.lastRenewed.IsZero() && now.Sub(m.lastRenewed) < m.opts.LeaseDuration
	for name, o := range m.seen {
		if name == m.leaseName() {
			continue // this replica's own liveness is its own renewals, below
		}
		left := o.duration - now.Sub(o.at)
		if left <= 0 {
			continue
		}
		if next == 0 || left < next {
			next = left
		}
		if o.refused != "" {
			// Reported while it would otherwise count: an expired one claims nothing.
			refused = append(refused, RefusedLease{Lease: name, Holder: o.holder, Address: o.address, Reason: o.refused})
			continue
		}
		live = append(live, Member{Identity: o.holder, Address: o.address})
	}
	sort.Slice(refused, func(i, j int) bool { return refused[i].Lease < refused[j].Lease })
	m.refused = refused
	if selfLive {
		live = append(live, Member{Identity: m.opts.Identity, Address: m.opts.Address})
	}
	sort.Slice(live, func(i, j int) bool { return live[i].Identity < live[j].Identity })
	live = slices.CompactFunc(live, func(a, b Member) bool { return a.Identity == b.Identity })
	// Joining or losing the Lease changes what this replica owns as much as a peer does.
	joined := m.synced && selfLive
	changed := !slices.Equal(live, m.members) || joined != m.joined
	m.joined = joined
	if changed {
		m.members = live
		m.changes++
		m.changedAt = now
	}
	m.mu.Unlock()
	if changed {
		m.log.Info("members changed", zap.Int("members", len(live)), zap.Any("live", live))
		if m.opts.OnChange != nil {
			m.opts.OnChange()
		}
	}
	if next > 0 {
		if m.timer == nil {
			m.timer = time.AfterFunc(next+10*time.Millisecond, m.poke)
		} else {
			m.timer.Reset(next + 10*time.Millisecond)
		}
	}
}

// Joined reports whether this replica holds a current Lease and has read its peers':
// until then it cannot know which clusters are its own.
func (m *Membership) Joined() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.synced && !m.lastRenewed.IsZero() && m.opts.Now().Sub(m.lastRenewed) < m.opts.LeaseDuration
}

// Members are the live members, sorted by identity.
func (m *Membership) Members() []Member {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.members)
}

// Owners are the members that cache cluster, highest weight first.
func (m *Membership) Owners(cluster string) []Member {
	return Owners(cluster, m.Members(), m.opts.Replicas)
}

// Owns reports whether this replica caches cluster. Nothing is owned before Joined.
func (m *Membership) Owns(cluster string) bool {
	if !m.Joined() {
		return false
	}
	for _, o := range m.Owners(cluster) {
		if o.Identity == m.opts.Identity {
			return true
		}
	}
	return false
}

// Refused are the live Leases of the group that are not members because they do not
// prove the group key, sorted by name.
func (m *Membership) Refused() []RefusedLease {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.refused)
}

// Key is the group key.
func (m *Membership) Key() *GroupKey { return m.opts.Key }

// Stats are the figures behind the sharding metrics.
type Stats struct {
	Members   int
	Changes   int
	ChangedAt time.Time
	// Refused counts the live Leases that are not members (Refused).
	Refused int
}

// Stats returns the membership's figures.
func (m *Membership) Stats() Stats {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return Stats{Members: len(m.members), Changes: m.changes, ChangedAt: m.changedAt, Refused: len(m.refused)}
}
