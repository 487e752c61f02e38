package clusters

import (
	"sync/atomic"

	"k8s.io/client-go/tools/cache"
)

// InformerRef identifies one informer run: which cluster, resource and namespace scope it
// caches, plus a number unique to this run, so that a consumer can tell a restarted
// informer's objects from the previous run's.
type InformerRef struct {
	Cluster    string
	Resource   string // "pods", "deployments.apps"
	Namespace  string // "" for all namespaces
	Kind       string
	APIVersion string
	Namespaced bool
	// Names are what the resource answers to: plural, singular, short names (from
	// discovery), in lower case.
	Names      []string
	Singular   string
	ShortNames []string
	// Categories are the discovery categories the resource belongs to ("all" for
	// `kubectl get all`).
	Categories []string
	// Columns are a custom resource's additionalPrinterColumns (from its CRD), for
	// kubectl tables; empty for built-in resources.
	Columns []PrinterColumn
	ID      uint64
}

// PrinterColumn is one additionalPrinterColumn of a CRD.
type PrinterColumn struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Format      string `json:"format,omitempty"`
	Description string `json:"description,omitempty"`
	Priority    int32  `json:"priority,omitempty"`
	JSONPath    string `json:"jsonPath"`
}

// EventHandler receives every change to every cached object of every cluster; the
// aggregator implements it. Calls for one informer are sequential; calls for different
// informers are concurrent. Objects are shared and must not be modified.
type EventHandler interface {
	OnAdd(ref *InformerRef, obj *Object)
	OnUpdate(ref *InformerRef, old, obj *Object)
	OnDelete(ref *InformerRef, obj *Object)
	// OnStop says the informer stopped (cluster removed or restarted, resource no longer
	// served): every object it delivered leaves the cache.
	OnStop(ref *InformerRef)
	// OnFleet hands the handler the fleet that feeds it, once, when the fleet is made
	// (before any other call): answers read which clusters exist and how fresh each is
	// from it.
	OnFleet(FleetView)
}

// FleetView is what a consumer reads of the fleet, cheaply: which clusters exist,
// whether the cluster source has been read, and one cluster's freshness for one
// resource. *Fleet is one.
type FleetView interface {
	Names() []string
	Loaded() bool
	Freshness(cluster, resource string) (Freshness, bool)
}

var informerIDs atomic.Uint64

// handlerFuncs adapts client-go's handler to EventHandler.
// It also keeps count of the informer's objects (for status and metrics, without
// listing the store); h may be nil.
func handlerFuncs(ref *InformerRef, count *atomic.Int64, h EventHandler) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			count.Add(1)
			if o, ok := obj.(*Object); ok && h != nil {
				h.OnAdd(ref, o)
			}
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*Object)
			n, ok2 := obj.(*Object)
			if ok1 && ok2 && h != nil {
				h.OnUpdate(ref, o, n)
			}
		},
		DeleteFunc: func(obj any) {
			count.Add(-1)
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if o, ok := obj.(*Object); ok && h != nil {
				h.OnDelete(ref, o)
			}
		},
	}
}
