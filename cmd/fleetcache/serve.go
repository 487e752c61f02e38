package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/auth"
	"github.com/fleetcache/fleetcache/internal/config"
	"github.com/fleetcache/fleetcache/internal/filewatch"
	"github.com/fleetcache/fleetcache/internal/kubeapi"
	"github.com/fleetcache/fleetcache/internal/metrics"
	"github.com/fleetcache/fleetcache/internal/request"
	"github.com/fleetcache/fleetcache/internal/server"
	"github.com/fleetcache/fleetcache/internal/sharding"
	"github.com/fleetcache/fleetcache/internal/version"
)

// listFlag collects a flag given several times or as a comma/colon separated list.
type listFlag struct {
	vals []string
	sep  string
}

func (l *listFlag) String() string { return strings.Join(l.vals, l.sep) }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, l.sep) {
		if v = strings.TrimSpace(v); v != "" {
			l.vals = append(l.vals, v)
		}
	}
	return nil
}

// loadConfig reads the file (if any), then applies the flags that were set.
func loadConfig(args []string) (*config.Config, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var (
		file       = fs.String("config", "", "configuration file (see config.example.yaml); flags override it")
		listen     = fs.String("listen", "", "address for the API, /metrics and health (default "+config.DefaultListen+")")
		kubeconfig = &listFlag{sep: string(os.PathListSeparator)}
		include    = &listFlag{sep: ","}
		exclude    = &listFlag{sep: ","}
		resources  = &listFlag{sep: ","}
		_          = fs.Duration("resync-period", 0, "removed: refused if set")
		qps        = fs.Float64("qps", 0, "per-cluster client QPS (default 50)")
		burst      = fs.Int("burst", 0, "per-cluster client burst (default 100)")
		reqTimeout = fs.Duration("request-timeout", 0, "timeout of discovery, probes and watch set-up (default 10s)")
		syncTO     = fs.Duration("initial-sync-timeout", 0, "after this a cluster still syncing no longer holds back readiness (default 2m)")
		maxLists   = fs.Int("max-concurrent-lists", 0, "fleet-wide cap on concurrent initial lists (default 4)")
		contTTL    = fs.Duration("continue-ttl", 0, "lifetime of a continue token (default 15m)")
		grace      = fs.Duration("shutdown-grace-period", 0, "time in-flight requests and watch streams get after SIGTERM (default 20s)")
		inCluster  = fs.String("in-cluster", "", "add the cluster fleetcache runs in: auto (default), always or never")
		tokenFile  = fs.String("token-file", "", "static bearer tokens and their users' scopes (see docs/security.md); reloaded on change")
		trKube     = fs.String("token-review-kubeconfig", "", "authenticate callers with TokenReview against this kubeconfig's cluster")
		trContext  = fs.String("token-review-context", "", "the kubeconfig context for --token-review-kubeconfig")
		insecure   = fs.Bool("insecure-allow-unauthenticated", false, "serve a non-loopback address without authentication (only behind something that authenticates)")
		serveSecr  = fs.Bool("serve-secrets", false, "serve Secrets (never their values)")
		tlsCert    = fs.String("tls-cert-file", "", "serve HTTPS with this certificate (reloaded on change)")
		tlsKey     = fs.String("tls-key-file", "", "the certificate's private key")
		readyPol   = fs.String("ready-policy", "", "when /readyz is ok: all (default), any, quorum or atLeast (with --ready-min)")
		readyMin   = fs.Int("ready-min", 0, "clusters that must be Synced for --ready-policy atLeast")
		logLevel   = fs.String("log-level", "", "debug, info, warn or error (default info)")
		logFormat  = fs.String("log-format", "", "json or console (default json)")
	)
	fs.Var(kubeconfig, "kubeconfig", "kubeconfig file(s), colon-separated or repeated (default $KUBECONFIG or ~/.kube/config)")
	fs.Var(include, "context", "only these contexts (globs, comma-separated or repeated)")
	fs.Var(exclude, "exclude-context", "never these contexts (globs)")
	fs.Var(resources, "resources", `resources to cache, kubectl-style ("pods,deployments.apps"; "*" for all)`)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	cfg := &config.Config{}
	if *file != "" {
		var err error
		if cfg, err = config.Load(*file); err != nil {
			return nil, err
		}
	}
	var flagErr error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			cfg.Listen = *listen
		case "kubeconfig":
			cfg.Kubeconfig = kubeconfig.vals
		case "context":
			cfg.Contexts.Include = include.vals
		case "exclude-context":
			cfg.Contexts.Exclude = exclude.vals
		case "resources":
			cfg.Resources = nil
			for _, r := range resources.vals {
				cfg.Resources = append(cfg.Resources, clusters.ResourceSpec{Name: r})
			}
		case "resync-period":
			flagErr = fmt.Errorf("--resync-period: %w", config.ErrResyncRemoved)
		case "qps":
			cfg.Cluster.QPS = float32(*qps)
		case "burst":
			cfg.Cluster.Burst = *burst
		case "request-timeout":
			cfg.Cluster.RequestTimeout = metav1.Duration{Duration: *reqTimeout}
		case "initial-sync-timeout":
			cfg.Cluster.InitialSyncTimeout = metav1.Duration{Duration: *syncTO}
		case "max-concurrent-lists":
			cfg.MaxConcurrentInitialLists = *maxLists
		case "shutdown-grace-period":
			cfg.ShutdownGracePeriod = metav1.Duration{Duration: *grace}
		case "in-cluster":
			cfg.InCluster.Mode = *inCluster
		case "token-file":
			cfg.Auth.TokenFile = *tokenFile
		case "token-review-kubeconfig":
			cfg.Auth.TokenReview.Kubeconfig = *trKube
		case "token-review-context":
			cfg.Auth.TokenReview.Context = *trContext
		case "insecure-allow-unauthenticated":
			cfg.Auth.InsecureAllowUnauthenticated = *insecure
		case "serve-secrets":
			cfg.API.ServeSecrets = *serveSecr
		case "tls-cert-file":
			cfg.TLS.CertFile = *tlsCert
		case "tls-key-file":
			cfg.TLS.KeyFile = *tlsKey
		case "ready-policy":
			cfg.Readiness.Policy = *readyPol
		case "ready-min":
			cfg.Readiness.MinClusters = *readyMin
		case "continue-ttl":
			cfg.API.ContinueTTL = metav1.Duration{Duration: *contTTL}
		case "log-level":
			cfg.Log.Level = *logLevel
		case "log-format":
			cfg.Log.Format = *logFormat
		}
	})
	if flagErr != nil {
		return nil, flagErr
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func newLogger(c config.LogConfig) (*zap.Logger, error) {
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.Sampling = nil
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	return zc.Build()
}

func serve(args []string) error {
	cfg, err := loadConfig(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer log.Sync()
	// client-go logs through klog; send it to the same structured stream.
	klog.SetLogger(zapr.NewLogger(log.Named("client-go")))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The fleet feeds the index, and hands itself to it (OnFleet) for the freshness of
	// answers.
	index := aggregator.New(nil, aggregator.Options{ContinueTTL: cfg.API.ContinueTTL.Duration})
	clusterOpts := cfg.ClusterOptions()
	clusterOpts.Handler = index
	var fleet *clusters.Fleet
	var shard *shard
	source := cfg.Source()
	if cfg.Sharding.Enabled() {
		if shard, err = newShard(ctx, cfg, source, func() { fleet.Reload() }, log); err != nil {
			return err
		}
		source = shard.source
		// Every replica of the group verifies the others' continue tokens: a page begun
		// through one replica continues through any other.
		aggregator.SetTokenKey(shard.members.Key().Derive("positions"))
	}
	fleet = clusters.NewFleet(source, clusters.FleetOptions{Cluster: clusterOpts, Logger: log})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			fleet.Reload()
		}
	}()

	reg := prometheus.NewRegistry()
	// go_gc_heap_live_bytes (the heap the last GC kept) on top of the defaults: the figure
	// to size memory by, where heap in use also counts garbage not yet collected.
	goMetrics := collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)}))
	reg.MustRegister(goMetrics, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), metrics.NewCollector(fleet, metrics.Options{
		ClusterSeriesOnly: !cfg.Metrics.PerResourceSeries(), Budget: clusterOpts.Budget,
	}))
	var served server.Fleet = fleet
	ready := server.ReadyPolicy{Mode: cfg.Readiness.Policy, Min: cfg.Readiness.MinClusters, AllowEmpty: cfg.Readiness.AllowEmpty}
	var shardStatus server.Sharding
	var route func(http.Handler) http.Handler
	var router *sharding.Router
	if shard != nil {
		router = &sharding.Router{Source: shard.source, Scope: request.Scope, Learn: index.Learn, MaxResponseBytes: cfg.API.ResponseCap(), Logger: log}
		if f := cfg.Sharding.PeerCAFile; f != "" {
			roots, err := sharding.LoadPeerCA(f)
			if err != nil {
				return err
			}
			router.Client = sharding.PeerClient(roots)
		}
		route = router.Wrap
		reg.MustRegister(shard.collectors(fleet)...)
		served, shardStatus = shard.fleet(fleet), shard.source
		// A replica may own no cluster at all (more replicas than clusters): that is
		// normal, not a reason to be unready.
		ready.AllowEmpty = true
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var authn server.Authenticator
	var chain auth.Chain
	var tokens *auth.TokenFile
	if cfg.Auth.TokenFile != "" {
		if tokens, err = auth.LoadTokenFile(cfg.Auth.TokenFile); err != nil {
			return err
		}
		go tokens.Watch(ctx, 2*time.Second, log)
		chain = append(chain, tokens)
	}
	if tr := cfg.Auth.TokenReview; tr.Enabled() {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if tr.Kubeconfig != "" {
			rules.ExplicitPath = tr.Kubeconfig
		}
		restCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: tr.Context}).ClientConfig()
		if err != nil {
			return fmt.Errorf("auth.tokenReview: %w", err)
		}
		reviewer, err := auth.NewTokenReview(restCfg, tr.Audiences)
		if err != nil {
			return fmt.Errorf("auth.tokenReview: %w", err)
		}
		reviewer.Policy = tokens
		chain = append(chain, reviewer)
	}
	if len(chain) > 0 {
		authn = chain
	} else if host, _, _ := net.SplitHostPort(cfg.Listen); !config.Loopback(host) {
		log.Warn("SERVING WITHOUT AUTHENTICATION on a non-loopback address (insecureAllowUnauthenticated): anyone who can reach it reads the whole fleet", zap.String("listen", cfg.Listen))
	}
	if shard != nil {
		// Peers' requests carry the caller's identity signed with the group key, not a
		// token; without authentication too, a request claiming to be a peer's must prove
		// the key.
		if authn != nil {
			shard.peers.Inner = authn
		}
		authn = shard.peers
	}
	handler := server.New(server.Options{
		Authenticator: authn, ServeSecrets: cfg.API.ServeSecrets, MaxResponseBytes: cfg.API.ResponseCap(),
		Limits: server.Limits{MaxInFlight: cfg.API.MaxInFlight, MaxWatches: cfg.API.MaxWatches, RequestTimeout: cfg.API.RequestTimeout.Duration,
			ListSeats: cfg.API.ListSeats, ListQueue: cfg.API.ListQueue, ListQueueWait: cfg.API.ListQueueWait.Duration},
		Fleet: served, Sharding: shardStatus, Route: route, Index: index, Gatherer: reg, Registerer: reg, Logger: log,
		Ready:   ready,
		KubeAPI: &kubeapi.Handler{Index: index, Fleet: fleet},
	})
	// Headers (and the request line) are bounded as kube-apiserver bounds them: more is 431.
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: request.MaxHeaderBytes}
	// Watch streams never go idle by themselves: end them when shutdown starts, so that
	// Shutdown can wait for the rest.
	srv.RegisterOnShutdown(handler.EndStreams)
	if router != nil {
		srv.RegisterOnShutdown(router.EndStreams)
	}
	var resourceNames []string
	for _, r := range cfg.Resources {
		resourceNames = append(resourceNames, r.Name)
	}
	log.Info("fleetcache starting", zap.String("version", version.Version), zap.String("listen", ln.Addr().String()),
		zap.Strings("kubeconfig", cfg.Kubeconfig), zap.Bool("inCluster", cfg.UseInCluster()), zap.Strings("resources", resourceNames))

	// The caches outlive the signal: requests still in flight are answered from them.
	fleetCtx, cancelFleet := context.WithCancel(context.Background())
	defer cancelFleet()
	fleetDone := make(chan struct{})
	go func() {
		_ = fleet.Start(fleetCtx)
		close(fleetDone)
	}()
	if cfg.TLS.CertFile != "" {
		since := filewatch.StampOf(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		certs, err := loadCert(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return err
		}
		go certs.watch(ctx, since, log)
		ln = tls.NewListener(ln, &tls.Config{GetCertificate: certs.get, MinVersion: tls.VersionTLS12})
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if shard != nil {
		// The membership ends with the signal: the Lease is deleted at once, so that the
		// peers start taking this replica's clusters over while it drains.
		go func() { _ = shard.members.Run(ctx) }()
		go shard.timeHandovers(ctx, fleet)
		log.Info("sharding", zap.String("identity", cfg.Sharding.Identity), zap.String("advertiseURL", cfg.Sharding.AdvertiseURL),
			zap.String("home", cfg.Sharding.HomeContext), zap.String("namespace", cfg.Sharding.Namespace), zap.Int("replicas", cfg.Sharding.Replicas))
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	}
	stop() // a second signal now kills the process at once
	log.Info("shutting down: no new requests; in-flight requests and watch streams get the grace period",
		zap.Duration("gracePeriod", cfg.ShutdownGracePeriod.Duration))
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGracePeriod.Duration)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("grace period over; closing the remaining connections", zap.Error(err))
		_ = srv.Close()
	}
	cancelFleet()
	<-fleetDone
	log.Info("stopped")
	return nil
}
