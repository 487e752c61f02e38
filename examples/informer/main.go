// Command informer counts the fleet's pods per cluster with a stock client-go informer
// that reads fleetcache instead of an apiserver. Usage: informer KUBECONFIG, where
// KUBECONFIG is what `fleetcache kubeconfig` prints (its current context is "fleet").
package main

import (
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// example:start
func main() {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Args[1]) // fleetcache kubeconfig > fleet.yaml
	if err != nil {
		panic(err)
	}
	factory := informers.NewSharedInformerFactory(kubernetes.NewForConfigOrDie(cfg), 0)
	pods := factory.Core().V1().Pods()
	pods.Informer() // register before Start
	stop := make(chan struct{})
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, pods.Informer().HasSynced) {
		panic("not synced")
	}
	all, err := pods.Lister().List(labels.Everything())
	if err != nil {
		panic(err)
	}
	perCluster := map[string]int{}
	for _, p := range all {
		perCluster[p.Annotations["fleetcache.io/cluster"]]++ // every object names its cluster
	}
	fmt.Println(perCluster) // map[alpha:12 bravo:20 charlie:30]
}

// example:end
