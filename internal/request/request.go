package request

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/auth"
	"github.com/fleetcache/fleetcache/internal/glob"
)

// Options are the pipeline's policies. Zero values mean the defaults (setDefaults).
type Options struct {
	// DefaultLimit is a page's size when a paged request names none: 500, what kubectl
	// asks for.
	DefaultLimit int
	// MaxLimit is the largest page; a request asking for more gets this many (a limit is
	// an upper bound, as in the Kubernetes API): 5000, about 15 MiB of realistic pods.
	MaxLimit int
	// MaxResponseBytes cuts a list short, with a continue token, once its encoded items
	// reach it: 32 MiB, so that no single answer holds a client (or a proxy) for long.
	// A list asked at once (Read.AtOnce) is not cut: its client expects no token.
	MaxResponseBytes int
	// StreamWriteTimeout bounds writing one event of a watch stream: a client that stops
	// reading is disconnected after it, 10s.
	StreamWriteTimeout time.Duration
	// ServeSecrets allows Secrets (always without values) to be served. Default: refused
	// on /api/v1, hidden (not discovered) on the Kubernetes API.
	ServeSecrets bool
	// ListSeats, ListQueue and ListQueueWait configure list admission; see fairness.go.
	ListSeats     int
	ListQueue     int
	ListQueueWait time.Duration
}

func (o *Options) setDefaults() {
	if o.DefaultLimit == 0 {
		o.DefaultLimit = 500
	}
	if o.MaxLimit == 0 {
		o.MaxLimit = 5000
	}
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = 32 << 20
	}
	if o.StreamWriteTimeout == 0 {
		o.StreamWriteTimeout = 10 * time.Second
	}
	if o.ListSeats == 0 {
		o.ListSeats = defaultListSeats() // a core stays free for cheap requests
	}
	if o.ListQueue == 0 {
		o.ListQueue = 64 // a client's waiting lists; more are one client flooding
	}
	if o.ListQueueWait == 0 {
		o.ListQueueWait = 30 * time.Second // half the default request timeout
	}
}

// Pipeline is the read path of every face; see the package doc.
type Pipeline struct {
	ix   *aggregator.Index
	opts Options
	adm  *admission
	// streams ends when the server shuts down (EndStreams): open watch streams end
	// cleanly then, and new ones at once.
	streams    context.Context
	endStreams context.CancelFunc
	chunk      int // wholeChunk; smaller in tests
}

// New returns the pipeline over ix.
func New(ix *aggregator.Index, opts Options) *Pipeline {
	opts.setDefaults()
	streams, end := context.WithCancel(context.Background())
	return &Pipeline{ix: ix, opts: opts, adm: newAdmission(opts), streams: streams, endStreams: end, chunk: wholeChunk}
}

// Options are the pipeline's policies, defaults applied.
func (p *Pipeline) Options() Options { return p.opts }

// Index is the index the pipeline reads.
func (p *Pipeline) Index() *aggregator.Index { return p.ix }

// EndStreams ends every open watch stream of every face cleanly (http.Server's Shutdown
// waits for them otherwise) and makes new ones end at once.
func (p *Pipeline) EndStreams() { p.endStreams() }

// Scope is the caller's visibility (the authenticated user's clusters and namespaces);
// nil for an unrestricted caller.
func Scope(r *http.Request) aggregator.Scope {
	if u := auth.UserFrom(r.Context()); u.Restricted() {
		return u
	}
	return nil
}

// Visible is the Secret policy, the one rule every face applies: a Secret resource is
// visible only when Secrets are served.
func (p *Pipeline) Visible(info aggregator.ResourceInfo) bool {
	return p.opts.ServeSecrets || !info.IsSecret()
}

// Resources are the cached resources a client may see.
func (p *Pipeline) Resources() []aggregator.ResourceInfo {
	var out []aggregator.ResourceInfo
	for _, r := range p.ix.Resources() {
		if p.Visible(r) {
			out = append(out, r)
		}
	}
	return out
}

// Resolve applies the Secret policy to a resource as a client names it. A name the index
// does not know passes: the query reports it (ErrUnknownResource, with the list of what
// is cached).
func (p *Pipeline) Resolve(name string) error {
	if info, ok := p.ix.Resource(name); ok && !p.Visible(info) {
		return ErrSecretsOff
	}
	return nil
}

// Read is one read as a face parsed it from its URL: what to read, not how to encode it.
type Read struct {
	Resource string // as the client names it
	// Cluster is a cluster name or glob; "" for every cluster.
	Cluster   string
	Namespace string
	// Name selects one object (a watch of one object, as kubectl get NAME -w asks).
	Name          string
	LabelSelector string
	FieldSelector string
	// Limit is the page size as asked ("" for none); Paged is whether the answer comes
	// in pages at all (lists, not counts or watches); UpperBound reads it as the
	// Kubernetes API does (PageSize).
	Limit      string
	Paged      bool
	UpperBound bool
	// Whole answers a list whole, whatever its limit, cut only by MaxResponseBytes.
	Whole    bool
	Continue string
	// Only narrows to these clusters and After positions a list (between sharded
	// replicas; see aggregator.Query).
	Only  []string
	After string
}

// Query turns a read into an index query: the Secret policy, the caller's scope, the
// selectors and the page size. Its errors are BadParam (400) or ErrSecretsOff (403).
func (p *Pipeline) Query(r *http.Request, rd Read) (aggregator.Query, error) {
	q := aggregator.Query{Resource: rd.Resource, Clusters: rd.Cluster, Namespace: rd.Namespace, Continue: rd.Continue, Scope: Scope(r),
		Only: rd.Only, After: rd.After}
	if q.Resource == "" {
		return q, BadParam{"resource", "required, e.g. resource=pods or resource=deployments.apps"}
	}
	if err := p.Resolve(q.Resource); err != nil {
		return q, err
	}
	if q.Clusters != "" {
		if err := glob.Validate(q.Clusters); err != nil {
			return q, BadParam{"cluster", "not a valid glob: " + err.Error()}
		}
	}
	if q.Namespace != "" {
		if msgs := validation.IsDNS1123Label(q.Namespace); len(msgs) > 0 {
			return q, BadParam{"namespace", strings.Join(msgs, "; ")}
		}
	}
	var err error
	if q.LabelSelector, err = labels.Parse(rd.LabelSelector); err != nil {
		return q, BadParam{"labelSelector", err.Error()}
	}
	fs := rd.FieldSelector
	if rd.Name != "" {
		if fs != "" {
			fs += ","
		}
		fs += "metadata.name=" + rd.Name
	}
	if q.FieldSelector, err = fields.ParseSelector(fs); err != nil {
		return q, BadParam{"fieldSelector", err.Error()}
	}
	if rd.Paged {
		if q.Limit, err = p.PageSize(rd.Limit, rd.UpperBound); err != nil {
			return q, err
		}
		if rd.Whole {
			q.Limit = 0
		}
	}
	return q, nil
}

// AtOnce reports whether a list is everything in one answer, never cut at
// MaxResponseBytes: a Kubernetes API list asked without a limit (or limit=0), as
// kube-apiserver answers it. Its clients do not expect a continue token (kubectl
// --sort-by sorts one answer; a List call without ListOptions.Limit reads one).
func (rd Read) AtOnce() bool { return rd.UpperBound && (rd.Limit == "" || rd.Limit == "0") }

// PageSize reads a limit parameter: the one rule of page sizes, under each API's
// contract. Anything but a non-negative integer is a BadParam. With upperBound (the
// Kubernetes API's contract: limit is the most a client wants, the server may send
// fewer, and none or 0 means everything) a limit above MaxLimit gets MaxLimit, and none
// or 0 is 0 (no limit). Otherwise (/api/v1's contract: a page size of 1 to MaxLimit)
// none is DefaultLimit and one out of range is a BadParam.
func (p *Pipeline) PageSize(s string, upperBound bool) (int, error) {
	if s == "" {
		if upperBound {
			return 0, nil
		}
		return p.opts.DefaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	switch {
	case err != nil || n < 0:
		return 0, BadParam{"limit", fmt.Sprintf("%q is not a number from 0 to %d", s, p.opts.MaxLimit)}
	case upperBound:
		return min(n, p.opts.MaxLimit), nil
	case n < 1 || n > p.opts.MaxLimit:
		return 0, BadParam{"limit", fmt.Sprintf("must be between 1 and %d, got %d", p.opts.MaxLimit, n)}
	}
	return n, nil
}

// Get returns one object, after the Secret policy and within the caller's scope.
func (p *Pipeline) Get(r *http.Request, cluster, resource, namespace, name string) (aggregator.Item, error) {
	if err := p.Resolve(resource); err != nil {
		return aggregator.Item{}, err
	}
	return p.ix.Get(cluster, resource, namespace, name, Scope(r))
}

// Count counts what a read selects, grouped, under the request's context (a count that
// scans stops once its client is gone). A count that reads a field from every object it
// selects (aggregator.Index.ReadsObjects: a field selector or group-by no index answers)
// is expensive work: it is admitted as a whole list is (fairness.go: every list seat,
// waiting its client's turn) and runs on one core while cheaper requests run. Other
// counts run at once.
func (p *Pipeline) Count(r *http.Request, q aggregator.Query, groupBy []string) (*aggregator.CountResult, error) {
	ctx := r.Context()
	if p.ix.ReadsObjects(q, groupBy) {
		admitted, release, err := p.adm.admit(r, "count", 0)
		if err != nil {
			return nil, err
		}
		defer release()
		ctx = admitted
	}
	return p.ix.Count(ctx, q, groupBy)
}
