// Package config reads and validates fleetcache's configuration file
// (config.example.yaml documents every field) and applies command-line overrides.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/fleetcache/fleetcache/clusters"
)

// ErrResyncRemoved refuses resyncPeriod (and --resync-period), which was removed.
var ErrResyncRemoved = errors.New("removed: fleetcache never replays its cache to consumers (a relist sends only what changed); delete this setting")

// Config is the whole configuration. The zero value of every field means its default.
type Config struct {
	// Listen is the address of the HTTP API, /metrics and the health endpoints.
	Listen string `json:"listen,omitempty"`
	// Kubeconfig files, merged as kubectl merges them. Default: $KUBECONFIG, else
	// ~/.kube/config.
	Kubeconfig []string                `json:"kubeconfig,omitempty"`
	Contexts   clusters.ContextFilter  `json:"contexts,omitempty"`
	Resources  []clusters.ResourceSpec `json:"resources,omitempty"`
	// ResyncPeriod was removed: any value is refused with an error that says so, rather
	// than ignored (replaying every object every period is an event storm, and nothing
	// in fleetcache needs it).
	ResyncPeriod *metav1.Duration `json:"resyncPeriod,omitempty"`
	Cluster      ClusterConfig    `json:"cluster,omitempty"`
	// MaxConcurrentInitialLists caps lists running at once across the fleet. Default 4.
	MaxConcurrentInitialLists int `json:"maxConcurrentInitialLists,omitempty"`
	// ProbeBudget is how many freshness requests per second (probes and watch renewals)
	// the whole fleet may make; past it every cluster's probe and idle-proof intervals
	// stretch (clusters.RequestBudget). Default clusters.DefaultProbeBudget.
	ProbeBudget float64 `json:"probeBudget,omitempty"`
	// Metrics chooses the exported series.
	Metrics   MetricsConfig   `json:"metrics,omitempty"`
	Log       LogConfig       `json:"log,omitempty"`
	API       APIConfig       `json:"api,omitempty"`
	Readiness ReadinessConfig `json:"readiness,omitempty"`
	InCluster InClusterConfig `json:"inCluster,omitempty"`
	Auth      AuthConfig      `json:"auth,omitempty"`
	TLS       TLSConfig       `json:"tls,omitempty"`
	// ShutdownGracePeriod bounds how long in-flight requests and watch streams get to
	// finish after SIGTERM. Default 20s (inside Kubernetes' default 30s).
	ShutdownGracePeriod metav1.Duration `json:"shutdownGracePeriod,omitempty"`
	Sharding            ShardingConfig  `json:"sharding,omitempty"`
}

// InClusterConfig adds the cluster fleetcache runs in as a source.
type InClusterConfig struct {
	// Mode: auto (default: when running in a pod with a service account token), always
	// or never.
	Mode string `json:"mode,omitempty"`
	// Name of the local cluster. Default "local".
	Name string `json:"name,omitempty"`
	// ServiceAccountDir holds token and ca.crt. Default
	// /var/run/secrets/kubernetes.io/serviceaccount.
	ServiceAccountDir string `json:"serviceAccountDir,omitempty"`
}

// APIConfig tunes the query API.
type APIConfig struct {
	// ContinueTTL is how long a continue token stays valid. Default 15m.
	ContinueTTL metav1.Duration `json:"continueTTL,omitempty"`
	// ServeSecrets serves Secrets (never their values). Default false: refused.
	ServeSecrets bool `json:"serveSecrets,omitempty"`
	// SecretAnnotations are the annotation keys whose values Secrets keep in the cache
	// (and serve). Every other annotation of a Secret keeps its key with an empty value:
	// deploy tools copy whole manifests, values included, into annotations of their own.
	// Default: none.
	SecretAnnotations []string `json:"secretAnnotations,omitempty"`
	// MaxInFlight caps concurrent requests (watch streams excluded). Default 256.
	MaxInFlight int `json:"maxInFlight,omitempty"`
	// MaxWatches caps open watch streams. Default 1000.
	MaxWatches int `json:"maxWatches,omitempty"`
	// RequestTimeout bounds a request (watch streams excluded). Default 60s.
	RequestTimeout metav1.Duration `json:"requestTimeout,omitempty"`
	// ListSeats is how many list pages are encoded at once (a page over 2,000 objects
	// takes more than one seat; a whole list, or a count that reads a field from every
	// object, every seat). Default: the cores but one, at least 1. -1: no list
	// admission.
	ListSeats int `json:"listSeats,omitempty"`
	// ListQueue is how many lists one client may have waiting for a seat. Default 64.
	ListQueue int `json:"listQueue,omitempty"`
	// ListQueueWait is how long a list waits for a seat before it gets 429. Default 30s.
	ListQueueWait metav1.Duration `json:"listQueueWait,omitempty"`
	// MaxResponseBytes cuts a list that asked for a page (a limit) once its encoded items
	// reach it, with a continue token: a quantity such as 32Mi (the default). A
	// Kubernetes API list asked without a limit is never cut.
	MaxResponseBytes *resource.Quantity `json:"maxResponseBytes,omitempty"`
}

// ResponseCap is api.maxResponseBytes in bytes; 0 for the default.
func (a APIConfig) ResponseCap() int {
	if a.MaxResponseBytes == nil {
		return 0
	}
	return int(a.MaxResponseBytes.Value())
}

// AuthConfig says who may call the API.
type AuthConfig struct {
	// TokenFile holds static bearer tokens and each user's clusters and namespaces; it
	// is reloaded when it changes. Required unless listen is on loopback.
	TokenFile string `json:"tokenFile,omitempty"`
	// TokenReview authenticates tokens (e.g. service-account tokens) by asking a home
	// cluster. Entries of tokenFile without a token then give scopes by user name or
	// "group:<name>".
	TokenReview TokenReviewConfig `json:"tokenReview,omitempty"`
	// InsecureAllowUnauthenticated serves a non-loopback address without authentication.
	// Only for when something in front (a proxy, a NetworkPolicy-fenced sidecar)
	// authenticates.
	InsecureAllowUnauthenticated bool `json:"insecureAllowUnauthenticated,omitempty"`
}

// TokenReviewConfig names the home cluster that reviews tokens.
type TokenReviewConfig struct {
	Kubeconfig string   `json:"kubeconfig,omitempty"`
	Context    string   `json:"context,omitempty"`
	Audiences  []string `json:"audiences,omitempty"`
}

// Enabled reports whether token review is configured.
func (t TokenReviewConfig) Enabled() bool { return t.Kubeconfig != "" || t.Context != "" }

// TLSConfig serves HTTPS; the files are re-read when they change.
type TLSConfig struct {
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
}

// ReadinessConfig is the /readyz policy (see server.ReadyPolicy).
type ReadinessConfig struct {
	Policy      string `json:"policy,omitempty"`
	MinClusters int    `json:"minClusters,omitempty"`
	AllowEmpty  bool   `json:"allowEmpty,omitempty"`
}

// ClusterConfig applies to every cluster.
type ClusterConfig struct {
	QPS                 float32         `json:"qps,omitempty"`
	Burst               int             `json:"burst,omitempty"`
	RequestTimeout      metav1.Duration `json:"requestTimeout,omitempty"`
	ListTimeout         metav1.Duration `json:"listTimeout,omitempty"`
	InitialSyncTimeout  metav1.Duration `json:"initialSyncTimeout,omitempty"`
	ProbeInterval       metav1.Duration `json:"probeInterval,omitempty"`
	IdleProofInterval   metav1.Duration `json:"idleProofInterval,omitempty"`
	StaleAfter          metav1.Duration `json:"staleAfter,omitempty"`
	RediscoveryInterval metav1.Duration `json:"rediscoveryInterval,omitempty"`
}

// MetricsConfig chooses the exported series.
type MetricsConfig struct {
	// PerResource exports the per-resource series (about 62 per cluster and resource).
	// Default true; false keeps the cluster-level ones (19 per cluster) for fleets of more
	// than about 100 clusters.
	PerResource *bool `json:"perResource,omitempty"`
}

// PerResourceSeries reports whether per-resource series are exported.
func (m MetricsConfig) PerResourceSeries() bool { return m.PerResource == nil || *m.PerResource }

// LogConfig selects the log format and level.
type LogConfig struct {
	Level  string `json:"level,omitempty"`  // debug, info (default), warn, error
	Format string `json:"format,omitempty"` // json (default) or console
}

// Defaults that are not the clusters package's.
const (
	DefaultListen                    = "127.0.0.1:8080"
	DefaultMaxConcurrentInitialLists = 4
)

// Load reads a YAML (or JSON) file. Unknown fields are errors: a misspelt field would
// otherwise be silently ignored.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse reads a configuration from YAML or JSON; unknown fields are errors.
func Parse(raw []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// SetDefaults fills what the file and flags left empty.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if len(c.Kubeconfig) == 0 {
		// The defaults count only when they exist: in a pod, the in-cluster source may be
		// the only one.
		for _, p := range clusters.DefaultKubeconfigPaths() {
			if _, err := os.Stat(p); err == nil {
				c.Kubeconfig = append(c.Kubeconfig, p)
			}
		}
	}
	if c.InCluster.Mode == "" {
		c.InCluster.Mode = "auto"
	}
	if c.ShutdownGracePeriod.Duration == 0 {
		c.ShutdownGracePeriod.Duration = 20 * time.Second
	}
	if len(c.Resources) == 0 {
		c.Resources = clusters.DefaultResources()
	}
	if c.MaxConcurrentInitialLists == 0 {
		c.MaxConcurrentInitialLists = DefaultMaxConcurrentInitialLists
	}
	if c.ProbeBudget == 0 {
		c.ProbeBudget = clusters.DefaultProbeBudget
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	c.setShardingDefaults()
}

// Validate reports every problem at once, each prefixed with its field path.
func (c *Config) Validate() error {
	errs := c.validateSharding()
	if host, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("listen"), c.Listen, err.Error()))
	} else if !Loopback(host) && c.Auth.TokenFile == "" && !c.Auth.TokenReview.Enabled() && !c.Auth.InsecureAllowUnauthenticated {
		errs = append(errs, field.Invalid(field.NewPath("listen"), c.Listen,
			"refusing to serve the fleet's data without authentication on a non-loopback address: set auth.tokenFile or auth.tokenReview, or auth.insecureAllowUnauthenticated (--insecure-allow-unauthenticated) if something in front authenticates"))
	}
	if c.Auth.TokenFile != "" {
		if _, err := os.Stat(c.Auth.TokenFile); err != nil {
			errs = append(errs, field.Invalid(path("auth.tokenFile"), c.Auth.TokenFile, err.Error()))
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, field.Required(path("tls"), "certFile and keyFile go together"))
	}
	for name, f := range map[string]string{"tls.certFile": c.TLS.CertFile, "tls.keyFile": c.TLS.KeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				errs = append(errs, field.Invalid(path(name), f, err.Error()))
			}
		}
	}
	if q := c.API.MaxResponseBytes; q != nil && (q.Cmp(resource.MustParse("64Ki")) < 0 || q.Cmp(resource.MustParse("1Gi")) > 0) {
		errs = append(errs, field.Invalid(path("api.maxResponseBytes"), q.String(), "must be from 64Ki to 1Gi"))
	}
	for i, k := range c.API.SecretAnnotations {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, field.Invalid(path("api.secretAnnotations").Index(i), k, "not an annotation key: "+msgs[0]))
		}
	}
	if c.API.ListSeats < -1 {
		errs = append(errs, field.Invalid(path("api.listSeats"), c.API.ListSeats, "must be -1 (no list admission), 0 (default) or more"))
	}
	for name, n := range map[string]int{"api.maxInFlight": c.API.MaxInFlight, "api.maxWatches": c.API.MaxWatches, "api.listQueue": c.API.ListQueue} {
		if n < 0 {
			errs = append(errs, field.Invalid(path(name), n, "must not be negative"))
		}
	}
	if !oneOf(c.InCluster.Mode, "", "auto", "always", "never") {
		errs = append(errs, field.NotSupported(path("inCluster.mode"), c.InCluster.Mode, []string{"auto", "always", "never"}))
	}
	if c.InCluster.Name != "" {
		if msgs := validation.IsDNS1123Subdomain(c.InCluster.Name); len(msgs) > 0 {
			errs = append(errs, field.Invalid(path("inCluster.name"), c.InCluster.Name, strings.Join(msgs, "; ")))
		}
	}
	if len(c.Kubeconfig) == 0 && !c.UseInCluster() {
		errs = append(errs, field.Required(path("kubeconfig"), "no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster: give kubeconfig files or run in a pod"))
	}
	for i, p := range c.Kubeconfig {
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("kubeconfig").Index(i), p, "cannot read: "+err.Error()))
		}
	}
	ctxPath := field.NewPath("contexts")
	for name, globs := range map[string][]string{"include": c.Contexts.Include, "exclude": c.Contexts.Exclude} {
		for i, g := range globs {
			if _, err := filepath.Match(g, ""); err != nil || g == "" {
				errs = append(errs, field.Invalid(ctxPath.Child(name).Index(i), g, "not a valid glob"))
			}
		}
	}
	seen := map[string]string{}
	for ctx, alias := range c.Contexts.Aliases {
		p := ctxPath.Child("aliases").Key(ctx)
		if msgs := validation.IsDNS1123Subdomain(alias); len(msgs) > 0 {
			errs = append(errs, field.Invalid(p, alias, "a cluster name must be a DNS-1123 subdomain: "+strings.Join(msgs, "; ")))
		}
		if other, dup := seen[alias]; dup {
			errs = append(errs, field.Duplicate(p, alias+" (also the alias of "+other+")"))
		}
		seen[alias] = ctx
	}
	for i, r := range c.Resources {
		p := field.NewPath("resources").Index(i)
		if strings.TrimSpace(r.Name) == "" {
			errs = append(errs, field.Required(p.Child("name"), `a resource name as kubectl takes it, e.g. "pods" or "deployments.apps"`))
		}
		for j, ns := range r.Namespaces {
			if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
				errs = append(errs, field.Invalid(p.Child("namespaces").Index(j), ns, strings.Join(msgs, "; ")))
			}
		}
		if _, err := labels.Parse(r.LabelSelector); err != nil {
			errs = append(errs, field.Invalid(p.Child("labelSelector"), r.LabelSelector, err.Error()))
		}
		if _, err := fields.ParseSelector(r.FieldSelector); err != nil {
			errs = append(errs, field.Invalid(p.Child("fieldSelector"), r.FieldSelector, err.Error()))
		}
		for j, ix := range r.Indexes {
			ip := p.Child("indexes").Index(j)
			if ix.Name == "" {
				errs = append(errs, field.Required(ip.Child("name"), "the index's name, e.g. spec.nodeName or images"))
			}
			if err := clusters.ValidateIndex(ix.JSONPath); err != nil || ix.JSONPath == "" {
				errs = append(errs, field.Invalid(ip.Child("jsonPath"), ix.JSONPath, fmt.Sprintf("not a JSONPath expression: %v", err)))
			}
		}
	}
	if c.ResyncPeriod != nil {
		errs = append(errs, field.Forbidden(path("resyncPeriod"), ErrResyncRemoved.Error()))
	}
	durations := map[string]time.Duration{
		"cluster.requestTimeout":      c.Cluster.RequestTimeout.Duration,
		"cluster.listTimeout":         c.Cluster.ListTimeout.Duration,
		"cluster.initialSyncTimeout":  c.Cluster.InitialSyncTimeout.Duration,
		"cluster.probeInterval":       c.Cluster.ProbeInterval.Duration,
		"cluster.idleProofInterval":   c.Cluster.IdleProofInterval.Duration,
		"cluster.staleAfter":          c.Cluster.StaleAfter.Duration,
		"cluster.rediscoveryInterval": c.Cluster.RediscoveryInterval.Duration,
		"api.continueTTL":             c.API.ContinueTTL.Duration,
		"shutdownGracePeriod":         c.ShutdownGracePeriod.Duration,
		"api.requestTimeout":          c.API.RequestTimeout.Duration,
	}
	for name, d := range durations {
		if d < 0 {
			errs = append(errs, field.Invalid(path(name), d.String(), "must not be negative"))
		}
	}
	if d := c.Cluster.IdleProofInterval.Duration; d > 0 && d < 5*time.Second {
		errs = append(errs, field.Invalid(path("cluster.idleProofInterval"), d.String(), "must be at least 5s: the apiserver's bookmark comes 2s before a watch ends"))
	}
	if stale, idle := c.Cluster.StaleAfter.Duration, c.Cluster.IdleProofInterval.Duration; stale > 0 && stale <= max(idle, 5*time.Second) {
		errs = append(errs, field.Invalid(path("cluster.staleAfter"), stale.String(), "must exceed cluster.idleProofInterval: an idle resource is proven current once per interval"))
	}
	if c.Cluster.QPS < 0 {
		errs = append(errs, field.Invalid(path("cluster.qps"), c.Cluster.QPS, "must not be negative"))
	}
	if c.Cluster.Burst < 0 {
		errs = append(errs, field.Invalid(path("cluster.burst"), c.Cluster.Burst, "must not be negative"))
	}
	if c.ProbeBudget < 0 {
		errs = append(errs, field.Invalid(path("probeBudget"), c.ProbeBudget, "must not be negative"))
	}
	if c.MaxConcurrentInitialLists < 0 {
		errs = append(errs, field.Invalid(path("maxConcurrentInitialLists"), c.MaxConcurrentInitialLists, "must not be negative"))
	}
	if !oneOf(c.Readiness.Policy, "", "all", "any", "quorum", "atLeast") {
		errs = append(errs, field.NotSupported(path("readiness.policy"), c.Readiness.Policy, []string{"all", "any", "quorum", "atLeast"}))
	}
	if c.Readiness.Policy == "atLeast" && c.Readiness.MinClusters < 1 {
		errs = append(errs, field.Invalid(path("readiness.minClusters"), c.Readiness.MinClusters, "policy atLeast needs minClusters >= 1"))
	}
	if !oneOf(c.Log.Level, "", "debug", "info", "warn", "error") {
		errs = append(errs, field.NotSupported(path("log.level"), c.Log.Level, []string{"debug", "info", "warn", "error"}))
	}
	if !oneOf(c.Log.Format, "", "json", "console") {
		errs = append(errs, field.NotSupported(path("log.format"), c.Log.Format, []string{"json", "console"}))
	}

	var result *multierror.Error
	for _, e := range errs {
		result = multierror.Append(result, e)
	}
	if result != nil {
		result.ErrorFormat = listErrors
	}
	return result.ErrorOrNil()
}

func listErrors(errs []error) string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = "  - " + e.Error()
	}
	return fmt.Sprintf("invalid configuration (%d problems):\n%s", len(errs), strings.Join(lines, "\n"))
}

func path(dotted string) *field.Path {
	parts := strings.Split(dotted, ".")
	return field.NewPath(parts[0], parts[1:]...)
}

func oneOf(s string, options ...string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}

// Loopback reports whether a listen host only accepts local connections.
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// UseInCluster reports whether the in-cluster source is used.
func (c *Config) UseInCluster() bool {
	switch c.InCluster.Mode {
	case "always":
		return true
	case "never":
		return false
	}
	return c.InClusterSource().Available()
}

// InClusterSource is the in-cluster source as configured.
func (c *Config) InClusterSource() clusters.InClusterSource {
	return clusters.InClusterSource{Name: c.InCluster.Name, Dir: c.InCluster.ServiceAccountDir}
}

// Source is every configured source of clusters.
func (c *Config) Source() clusters.Source {
	var ss clusters.Sources
	if len(c.Kubeconfig) > 0 {
		ss = append(ss, clusters.KubeconfigSource{Paths: c.Kubeconfig, Filter: c.Contexts})
	}
	if c.UseInCluster() {
		ss = append(ss, c.InClusterSource())
	}
	return ss
}

// ClusterOptions converts the configuration into the clusters package's options.
func (c *Config) ClusterOptions() clusters.Options {
	return clusters.Options{
		Resources:           c.Resources,
		SecretAnnotations:   c.API.SecretAnnotations,
		QPS:                 c.Cluster.QPS,
		Burst:               c.Cluster.Burst,
		RequestTimeout:      c.Cluster.RequestTimeout.Duration,
		ListTimeout:         c.Cluster.ListTimeout.Duration,
		InitialSyncTimeout:  c.Cluster.InitialSyncTimeout.Duration,
		ProbeInterval:       c.Cluster.ProbeInterval.Duration,
		IdleProofInterval:   c.Cluster.IdleProofInterval.Duration,
		StaleAfter:          c.Cluster.StaleAfter.Duration,
		RediscoveryInterval: c.Cluster.RediscoveryInterval.Duration,
		ListLimiter:         clusters.NewListLimiter(c.MaxConcurrentInitialLists),
		Budget:              clusters.NewRequestBudget(c.ProbeBudget),
	}
}
