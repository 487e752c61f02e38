package clusters

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/restmapper"
)

func (c *Cluster) kickDiscovery() {
	select {
	case c.rediscover <- struct{}{}:
	default:
	}
}

// discoveryLoop resolves the configured resources, starts their informers, and keeps
// doing so: resources that appear are started, resources no longer served are stopped and
// their objects dropped. Failures back off exponentially up to the rediscovery interval.
func (c *Cluster) discoveryLoop(ctx context.Context, cached discovery.CachedDiscoveryInterface) {
	newBackoff := func() wait.Backoff {
		return wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.2, Steps: 100, Cap: c.rediscoveryInterval()}
	}
	backoff := newBackoff()
	for {
		wait := c.rediscoveryInterval()
		err := c.discover(ctx, cached)
		// Every round asks the apiserver again: the cached document (tens of KiB per
		// cluster, more than the cluster's informers hold) is not kept in between.
		cached.Invalidate()
		if err != nil {
			c.mu.Lock()
			c.discoverErr = err
			c.mu.Unlock()
			c.resourceChanged()
			c.log.Debug("discovery failed", zap.Error(err))
			wait = backoff.Step()
		} else {
			c.mu.Lock()
			c.discoverErr = nil
			c.mu.Unlock()
			backoff = newBackoff()
		}
		select {
		case <-ctx.Done():
			return
		case <-c.opts.Clock.After(wait):
		case <-c.rediscover:
		}
	}
}

// resolved is one configured resource as this cluster serves it.
type resolved struct {
	requested  string
	gvr        schema.GroupVersionResource
	gvk        schema.GroupVersionKind
	namespaced bool
	names      []string
	api        metav1.APIResource
	columns    []PrinterColumn
	spec       ResourceSpec
}

func (r resolved) display() string {
	if r.gvr.Group == "" {
		return r.gvr.Resource
	}
	return r.gvr.Resource + "." + r.gvr.Group
}

func (c *Cluster) discover(ctx context.Context, cached discovery.CachedDiscoveryInterface) error {
	// ServerGroupsAndResources fails as a whole only when the apiserver cannot be reached;
	// a partial failure (one aggregated API down) still returns what it could.
	// With the cluster's context: a cluster being stopped does not wait for its discovery.
	c.mu.Lock()
	last := c.lastResolution
	c.mu.Unlock()
	if last != nil && c.validators.unchanged(ctx, c.discoveryConn) {
		c.reconcileResources(ctx, last.want, last.notServed)
		return nil
	}
	c.downloads.Add(1)
	var groups []*metav1.APIGroup
	var lists []*metav1.APIResourceList
	var err error
	if cc, ok := cached.(discovery.CachedDiscoveryInterfaceWithContext); ok {
		groups, lists, err = cc.ServerGroupsAndResourcesWithContext(ctx)
	} else {
		groups, lists, err = cached.ServerGroupsAndResources()
	}
	if err != nil && len(lists) == 0 {
		return fmt.Errorf("discovery: %w", err)
	}
	// What the apiserver serves rarely changes: the same complete answer resolves the same
	// way, without building a RESTMapper again (which was most of an idle fleet's garbage).
	var fingerprint uint64
	if err == nil {
		fingerprint = discoveryFingerprint(groups, lists)
		if last != nil && last.fingerprint == fingerprint {
			c.reconcileResources(ctx, last.want, last.notServed)
			return nil
		}
	}
	mapper := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, func(string) {})

	want := map[string]resolved{}
	var notServed []string
	for _, spec := range c.opts.Resources {
		if spec.Name == "*" {
			for _, r := range listable(lists) {
				if _, ok := want[r.display()]; !ok {
					r.spec = ResourceSpec{Name: r.display(), Namespaces: spec.Namespaces, LabelSelector: spec.LabelSelector, FieldSelector: spec.FieldSelector}
					r.requested = "*"
					want[r.display()] = r
				}
			}
			continue
		}
		gvr, err := mapper.ResourceFor(schema.ParseGroupResource(spec.Name).WithVersion(""))
		if err != nil {
			if meta.IsNoMatchError(err) {
				notServed = append(notServed, spec.Name)
				continue
			}
			return fmt.Errorf("resolve %q: %w", spec.Name, err)
		}
		gvk, err := mapper.KindFor(gvr)
		if err != nil {
			return fmt.Errorf("resolve %q: %w", spec.Name, err)
		}
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("resolve %q: %w", spec.Name, err)
		}
		r := resolved{requested: spec.Name, gvr: gvr, gvk: gvk, namespaced: mapping.Scope.Name() == meta.RESTScopeNameNamespace, spec: spec,
			names: discoveredNames(lists, gvr), api: apiResourceOf(lists, gvr)}
		want[r.display()] = r
	}
	c.resolutions.Add(1)
	complete := err == nil
	for name, r := range want {
		if _, err := scheme.Scheme.New(r.gvk); err != nil {
			r.columns = c.printerColumns(ctx, r.gvr)
			want[name] = r
			c.mu.Lock()
			_, read := c.columns[r.gvr]
			c.mu.Unlock()
			complete = complete && read // not read: try again next round
		}
	}
	c.mu.Lock()
	c.lastResolution = nil
	if complete {
		c.lastResolution = &resolution{fingerprint: fingerprint, want: want, notServed: notServed}
	}
	c.mu.Unlock()
	c.reconcileResources(ctx, want, notServed)
	return nil
}

// resolution is what one discovery answer resolved the configured resources to; it is
// read, never modified.
type resolution struct {
	fingerprint uint64
	want        map[string]resolved
	notServed   []string
}

// fingerprintSeed makes fingerprints comparable within the process.
var fingerprintSeed = maphash.MakeSeed()

// discoveryFingerprint hashes everything of a discovery answer that resolving resources
// reads: groups and their versions in order of preference, and every resource's names,
// kind, scope and verbs. Groups, lists and resources come in no fixed order (client-go
// builds them from maps): their hashes are summed.
func discoveryFingerprint(groups []*metav1.APIGroup, lists []*metav1.APIResourceList) uint64 {
	var h maphash.Hash
	h.SetSeed(fingerprintSeed)
	str := func(s string) {
		h.WriteString(s)
		h.WriteByte(0)
	}
	strs := func(ss []string) {
		for _, s := range ss {
			str(s)
		}
		h.WriteByte(1)
	}
	var sum uint64
	for _, g := range groups {
		h.Reset()
		h.WriteByte('g')
		str(g.Name)
		str(g.PreferredVersion.GroupVersion)
		for _, v := range g.Versions {
			str(v.GroupVersion)
		}
		sum += h.Sum64()
	}
	for _, l := range lists {
		var resources uint64
		for _, r := range l.APIResources {
			h.Reset()
			str(r.Name)
			str(r.SingularName)
			str(r.Group)
			str(r.Version)
			str(r.Kind)
			if r.Namespaced {
				h.WriteByte(1)
			}
			strs(r.Verbs)
			strs(r.ShortNames)
			strs(r.Categories)
			resources += h.Sum64()
		}
		h.Reset()
		h.WriteByte('l')
		str(l.GroupVersion)
		h.Write(binary.LittleEndian.AppendUint64(nil, resources))
		sum += h.Sum64()
	}
	return sum
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// printerColumns reads a custom resource's additionalPrinterColumns from its CRD, once
// per resource. Without access to CRDs the columns stay empty: tables then show the
// name and age only.
func (c *Cluster) printerColumns(ctx context.Context, gvr schema.GroupVersionResource) []PrinterColumn {
	c.mu.Lock()
	cols, ok := c.columns[gvr]
	c.mu.Unlock()
	if ok {
		return cols
	}
	dyn, err := dynamic.NewForConfigAndClient(c.informerClient, c.conn)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	crd, err := dyn.Resource(crdResource).Get(ctx, gvr.Resource+"."+gvr.Group, metav1.GetOptions{})
	if err != nil {
		c.log.Debug("no printer columns", zap.String("resource", gvr.String()), zap.Error(err))
		return nil
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		vm, _ := v.(map[string]any)
		if vm["name"] != gvr.Version {
			continue
		}
		raw, _, _ := unstructured.NestedSlice(vm, "additionalPrinterColumns")
		for _, col := range raw {
			cm, _ := col.(map[string]any)
			pc := PrinterColumn{}
			pc.Name, _ = cm["name"].(string)
			pc.Type, _ = cm["type"].(string)
			pc.Format, _ = cm["format"].(string)
			pc.Description, _ = cm["description"].(string)
			pc.JSONPath, _ = cm["jsonPath"].(string)
			if p, ok := cm["priority"].(int64); ok {
				pc.Priority = int32(p)
			}
			cols = append(cols, pc)
		}
	}
	c.mu.Lock()
	c.columns[gvr] = cols
	c.mu.Unlock()
	return cols
}

func apiResourceOf(lists []*metav1.APIResourceList, gvr schema.GroupVersionResource) metav1.APIResource {
	for _, l := range lists {
		if l.GroupVersion != gvr.GroupVersion().String() {
			continue
		}
		for _, r := range l.APIResources {
			if r.Name == gvr.Resource {
				return r
			}
		}
	}
	return metav1.APIResource{Name: gvr.Resource}
}

func namesOf(r metav1.APIResource) []string {
	names := []string{r.Name, strings.ToLower(r.Kind)}
	if r.SingularName != "" {
		names = append(names, r.SingularName)
	}
	return append(names, r.ShortNames...)
}

func discoveredNames(lists []*metav1.APIResourceList, gvr schema.GroupVersionResource) []string {
	for _, l := range lists {
		if l.GroupVersion != gvr.GroupVersion().String() {
			continue
		}
		for _, r := range l.APIResources {
			if r.Name == gvr.Resource {
				return namesOf(r)
			}
		}
	}
	return []string{gvr.Resource}
}

// listable returns every top-level resource that supports list and watch, in its
// group's preferred version.
func listable(lists []*metav1.APIResourceList) []resolved {
	var out []resolved
	seen := sets.New[schema.GroupResource]()
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !sets.New(r.Verbs...).HasAll("list", "watch") {
				continue
			}
			gr := schema.GroupResource{Group: gv.Group, Resource: r.Name}
			if seen.Has(gr) {
				continue // lists come in preferred-version order
			}
			seen.Insert(gr)
			out = append(out, resolved{gvr: gv.WithResource(r.Name), gvk: gv.WithKind(r.Kind), namespaced: r.Namespaced, names: namesOf(r), api: r})
		}
	}
	return out
}

func (c *Cluster) reconcileResources(ctx context.Context, want map[string]resolved, notServed []string) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	keep := map[string]bool{}
	type starting struct {
		rc  *resourceCache
		ctx context.Context
	}
	var start []starting
	for _, r := range want {
		namespaces := r.spec.Namespaces
		if len(namespaces) == 0 || !r.namespaced {
			namespaces = []string{""}
		}
		for _, ns := range namespaces {
			key := r.display() + "/" + ns
			keep[key] = true
			if existing, ok := c.resources[key]; ok && !existing.isNotServed() {
				continue
			}
			rc, err := c.newResourceCache(r, ns)
			if err != nil {
				c.log.Error("cannot cache resource", zap.String("resource", r.display()), zap.Error(err))
				continue
			}
			if old := c.resources[key]; old != nil {
				old.cancel()
			}
			c.resources[key] = rc
			start = append(start, starting{rc, ctx})
		}
	}
	// A resource that stopped being served (its CRD was deleted) goes, with its objects,
	// and a placeholder reports it.
	var gone []*resourceCache
	for _, name := range notServed {
		key := name + "/"
		keep[key] = true
		if existing, ok := c.resources[key]; !ok || existing.informer != nil {
			if ok {
				gone = append(gone, existing)
			}
			c.resources[key] = c.placeholder(name)
		}
	}
	for key, rc := range c.resources {
		if !keep[key] {
			delete(c.resources, key)
			gone = append(gone, rc)
		}
	}
	c.mu.Unlock()

	for _, rc := range gone {
		rc.cancel()
		<-rc.done
		if rc.informer != nil {
			c.log.Info("resource no longer served; its objects were dropped", zap.String("resource", rc.display), zap.String("namespace", rc.namespace))
		}
	}
	for _, s := range start {
		s.rc.start(s.ctx)
	}
	c.updateBudget()
	c.resourceChanged()
}

// placeholder is a resource that is configured but not served.
func (c *Cluster) placeholder(name string) *resourceCache {
	done := make(chan struct{})
	close(done)
	rc := &resourceCache{cluster: c, requested: name, display: name, codec: &codec{}, log: c.log.With(zap.String("resource", name)), done: done, cancel: func() {},
		cnt: newCounters(c.opts.Clock.Now()), proof: newProof()}
	rc.facts.notServed = true
	rc.cond = rc.derive()
	rc.cond.LastTransitionTime = c.opts.Clock.Now()
	return rc
}

func (rc *resourceCache) isNotServed() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.facts.notServed
}
