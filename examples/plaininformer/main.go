// Command plaininformer is the baseline fleetcache's memory is measured against: a plain
// client-go program that caches the same resources of several clusters with one typed
// SharedInformerFactory per kubeconfig context, as people write it. Once every informer
// has synced it prints one JSON line with the objects cached, the heap and the RSS, and
// exits (internal/memstat's figures, read as fleetcache's side of the benchmark reads
// them).
//
// Usage: plaininformer [-strip-managed-fields] [-resources pods,deployments.apps,...] KUBECONFIG CONTEXT...
//
// With -strip-managed-fields a transform drops each object's managedFields before it is
// stored, the usual first memory fix. The default resources are fleetcache's defaults.
// e2e's BenchmarkRealFleetMemoryVsInformers runs it against the real local fleet.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fleetcache/fleetcache/internal/memstat"
)

// defaults are fleetcache's default resources, as group/version/resource.
var defaults = map[string]schema.GroupVersionResource{
	"namespaces":                  {Version: "v1", Resource: "namespaces"},
	"nodes":                       {Version: "v1", Resource: "nodes"},
	"pods":                        {Version: "v1", Resource: "pods"},
	"services":                    {Version: "v1", Resource: "services"},
	"configmaps":                  {Version: "v1", Resource: "configmaps"},
	"persistentvolumeclaims":      {Version: "v1", Resource: "persistentvolumeclaims"},
	"deployments.apps":            {Group: "apps", Version: "v1", Resource: "deployments"},
	"replicasets.apps":            {Group: "apps", Version: "v1", Resource: "replicasets"},
	"statefulsets.apps":           {Group: "apps", Version: "v1", Resource: "statefulsets"},
	"daemonsets.apps":             {Group: "apps", Version: "v1", Resource: "daemonsets"},
	"jobs.batch":                  {Group: "batch", Version: "v1", Resource: "jobs"},
	"cronjobs.batch":              {Group: "batch", Version: "v1", Resource: "cronjobs"},
	"ingresses.networking.k8s.io": {Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"},
	"secrets":                     {Version: "v1", Resource: "secrets"},
}

func main() {
	strip := flag.Bool("strip-managed-fields", false, "drop managedFields before objects are stored")
	resources := flag.String("resources", "namespaces,nodes,pods,services,configmaps,deployments.apps,replicasets.apps,statefulsets.apps,daemonsets.apps,jobs.batch,cronjobs.batch,ingresses.networking.k8s.io,persistentvolumeclaims", "resources to cache")
	flag.Parse()
	if flag.NArg() < 2 {
		fmt.Fprintln(os.Stderr, "usage: plaininformer [flags] KUBECONFIG CONTEXT...")
		os.Exit(2)
	}
	var gvrs []schema.GroupVersionResource
	for _, r := range strings.Split(*resources, ",") {
		gvr, ok := defaults[r]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown resource %q\n", r)
			os.Exit(2)
		}
		gvrs = append(gvrs, gvr)
	}
	start := time.Now()
	stop := make(chan struct{})
	var stores []cache.Store
	var synced []cache.InformerSynced
	for _, ctx := range flag.Args()[1:] {
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: flag.Arg(0)}, &clientcmd.ConfigOverrides{CurrentContext: ctx}).ClientConfig()
		if err != nil {
			fail(err)
		}
		var opts []informers.SharedInformerOption
		if *strip {
			opts = append(opts, informers.WithTransform(stripManagedFields))
		}
		factory := informers.NewSharedInformerFactoryWithOptions(kubernetes.NewForConfigOrDie(cfg), 0, opts...)
		for _, gvr := range gvrs {
			inf, err := factory.ForResource(gvr)
			if err != nil {
				fail(err)
			}
			stores = append(stores, inf.Informer().GetStore())
			synced = append(synced, inf.Informer().HasSynced)
		}
		factory.Start(stop)
	}
	if !cache.WaitForCacheSync(stop, synced...) {
		fail(fmt.Errorf("not synced"))
	}
	rep := memstat.Report{SyncSeconds: time.Since(start).Seconds()}
	for _, s := range stores {
		rep.Objects += len(s.ListKeys())
	}
	memstat.Measure(&rep)
	runtime.KeepAlive(stores)
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fail(err)
	}
}

// stripManagedFields is the usual transform: managedFields are a third of many objects.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
