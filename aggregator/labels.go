package aggregator

import (
	"strings"
	"unique"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/fleetcache/fleetcache/clusters"
)

// A scan that no index answers visits every object, and at a million objects it is bound
// by memory latency: each object's labels were a map of their own (a header, a group, a
// key and a value string, each a cache miss away). Entries therefore carry their labels
// flattened into one string, interned: objects with the same labels (every pod of a
// ReplicaSet) share one copy, which stays in cache while a scan runs, and a scan that
// meets the same label set again reuses its answer. Namespaces are interned for the same
// reason (the key's copy is one more miss). Selectors are still evaluated by
// apimachinery (labels.Selector.Matches) through the labels.Labels interface.

// The flattened, interned label set comes with the object (clusters.Object.FlatLabels),
// shared by every object with the same labels.
const (
	labelSep = clusters.LabelSep
	kvSep    = clusters.KVSep
)

// flatLabels is a flattened label set as labels.Labels.
type flatLabels struct{ s string }

var _ labels.Labels = (*flatLabels)(nil)

func (f *flatLabels) Lookup(key string) (string, bool) {
	rest := f.s
	for rest != "" {
		pair, tail, _ := strings.Cut(rest, labelSep)
		if k, v, _ := strings.Cut(pair, kvSep); k == key {
			return v, true
		}
		rest = tail
	}
	return "", false
}

func (f *flatLabels) Has(key string) bool {
	_, ok := f.Lookup(key)
	return ok
}

func (f *flatLabels) Get(key string) string {
	v, _ := f.Lookup(key)
	return v
}

// labelMatcher evaluates one selector over the entries one scan visits; not safe for
// concurrent use (each shard's scan has its own).
type labelMatcher struct {
	sel     labels.Selector
	scratch flatLabels
	last    unique.Handle[string]
	lastOK  bool
	seen    bool
}

func (lm *labelMatcher) matches(h unique.Handle[string]) bool {
	if lm.seen && h == lm.last {
		return lm.lastOK
	}
	lm.scratch.s = h.Value()
	ok := lm.sel.Matches(&lm.scratch)
	lm.last, lm.lastOK, lm.seen = h, ok, true
	return ok
}

// namespace is the entry's namespace, without touching the object or its key.
func (e *entry) namespace() string { return e.ns.Value() }
