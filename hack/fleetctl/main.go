// Command fleetctl runs the local fleet of real kube-apiservers for the demo and for manual
// fault injection. hack/fleet.sh builds the binaries it needs and calls it; see
// `hack/fleet.sh help`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

const usage = `usage: hack/fleet.sh [flags] VERB [cluster]

Verbs for the whole fleet:
  up                start the fleet (creating it on first use) and wait until ready
  down              kill every process; data, PKI and ports are kept for the next up
  status            processes and readiness of every cluster
  seed              fill every cluster with its deterministic inventory
  kubeconfig        print the path of the fleet's kubeconfig; with --contexts N, write one with N contexts
                    spread over the clusters (each its own cluster and user entry) and print its path
  destroy           down, then delete the fleet's folder
  reap              kill any etcd/kube-apiserver whose command line names the folder

Fault verbs for one cluster:
  stop C            SIGSTOP its kube-apiserver (requests hang)
  cont C            SIGCONT it
  kill C            SIGKILL its kube-apiserver
  restart C         kill (if running) and start again, wait until ready
  kill-etcd C       SIGKILL its etcd (the main one)
  start-etcd C      start its etcd again
  kill-configmaps-etcd C   SIGKILL the second etcd that keeps its ConfigMaps (bravo's)
  start-configmaps-etcd C  start it again

The fleet is mixed (see internal/testfleet.Options): charlie runs kube-apiserver v1.32 with
watch-list off, bravo keeps its ConfigMaps on a second etcd, the others are plain v1.37.
--uniform makes every cluster alike (a new fleet only; up refuses to change an existing one).

Flags:
`

func main() {
	dir := flag.String("dir", envOr("FLEET_DIR", ".cache/fleet"), "fleet state folder (env FLEET_DIR)")
	clusters := flag.Int("clusters", 3, "number of clusters for up")
	bin := flag.String("bin", os.Getenv("FLEETCACHE_BIN"), "folder with etcd and kube-apiserver (env FLEETCACHE_BIN)")
	pods := flag.Int("pods", 0, "seed: pods per cluster (0: the small default plan)")
	contexts := flag.Int("contexts", 0, "kubeconfig: write a kubeconfig with this many contexts spread over the clusters and print its path")
	uniform := flag.Bool("uniform", false, "up: every cluster kube-apiserver v1.37 on one etcd, instead of the mixed fleet")
	flag.Usage = func() { fmt.Fprint(os.Stderr, usage); flag.PrintDefaults() }
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
	opts := testfleet.Options{Dir: abs, Clusters: *clusters, BinDir: *bin, Detach: true, Uniform: *uniform}
	if err := run(ctx, opts, flag.Arg(0), flag.Args()[1:], *pods, *contexts); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, opts testfleet.Options, verb string, args []string, pods, contexts int) error {
	switch verb {
	case "up":
		start := time.Now()
		f, err := testfleet.Up(ctx, opts)
		if err != nil {
			return err
		}
		fmt.Printf("fleet of %d clusters ready in %s\n", len(f.Clusters), time.Since(start).Round(time.Millisecond))
		printStatus(ctx, f)
		fmt.Printf("\nkubeconfig: %s\nlogs:       %s/<cluster>/{kube-apiserver,etcd,etcd-configmaps}.log\n", f.Kubeconfig, f.Dir)
		return nil
	case "reap":
		killed, err := testfleet.Reap(opts.Dir)
		if len(killed) > 0 {
			fmt.Printf("killed %v\n", killed)
		}
		return err
	}

	f, err := testfleet.Open(opts)
	if err != nil {
		return err
	}
	switch verb {
	case "down":
		return f.Down()
	case "destroy":
		if err := f.Down(); err != nil {
			return err
		}
		return os.RemoveAll(f.Dir)
	case "status":
		printStatus(ctx, f)
		return nil
	case "kubeconfig":
		if contexts > 0 {
			path := filepath.Join(f.Dir, fmt.Sprintf("kubeconfig-%d-contexts", contexts))
			if err := f.WriteManyContexts(path, contexts); err != nil {
				return err
			}
			fmt.Println(path)
			return nil
		}
		fmt.Println(f.Kubeconfig)
		return nil
	case "seed":
		return seed(ctx, f, pods)
	}

	if len(args) != 1 {
		return fmt.Errorf("%s needs exactly one cluster name", verb)
	}
	c, err := f.Cluster(args[0])
	if err != nil {
		return err
	}
	switch verb {
	case "stop":
		return c.Stop()
	case "cont":
		return c.Cont()
	case "kill":
		return c.Kill()
	case "restart":
		return c.Restart(ctx)
	case "kill-etcd":
		return c.KillEtcd()
	case "start-etcd":
		return c.StartEtcd()
	case "kill-configmaps-etcd":
		return c.KillConfigMapsEtcd()
	case "start-configmaps-etcd":
		return c.StartConfigMapsEtcd()
	}
	return fmt.Errorf("unknown verb %q (try: hack/fleet.sh help)", verb)
}

func seed(ctx context.Context, f *testfleet.Fleet, pods int) error {
	var (
		mu   sync.Mutex
		errs *multierror.Error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for _, c := range f.Clusters {
		wg.Go(func() {
			p, err := testfleet.Seed(ctx, c, testfleet.SeedOptions{Pods: pods})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = multierror.Append(errs, err)
				return
			}
			var parts []string
			for _, r := range []string{"namespaces", "nodes", "deployments", "replicasets", "pods", "services", "configmaps", "secrets", "widgets"} {
				parts = append(parts, fmt.Sprintf("%d %s", p.Count(r), r))
			}
			fmt.Printf("seeded %-8s %s\n", c.Name, strings.Join(parts, ", "))
		})
	}
	wg.Wait()
	if errs.ErrorOrNil() == nil {
		fmt.Printf("seeded %d clusters in %s\n", len(f.Clusters), time.Since(start).Round(time.Millisecond))
	}
	return errs.ErrorOrNil()
}

func printStatus(ctx context.Context, f *testfleet.Fleet) {
	if f.Layout != testfleet.Layout {
		fmt.Printf("note: this fleet has the older layout %d (every cluster alike); up refuses it: hack/fleet.sh destroy, then up, makes the mixed fleet (layout %d)\n\n", f.Layout, testfleet.Layout)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CLUSTER\tSERVER\tVERSION\tAPISERVER PID\tETCD PID\tREADY\tNOTES")
	for _, c := range f.Clusters {
		s := c.Status(ctx)
		ready := "yes"
		if !s.Ready {
			ready = "no: " + s.ReadyzProblem
		}
		var notes []string
		if !c.WatchList() {
			notes = append(notes, "--feature-gates="+c.FeatureGates+": informers LIST then WATCH")
		}
		if s.HasConfigMapsEtcd {
			notes = append(notes, fmt.Sprintf("configmaps on a second etcd :%d, pid %s", c.ConfigMapsEtcdPort, pid(s.ConfigMapsEtcdPID)))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Server, s.Version, pid(s.APIServerPID), pid(s.EtcdPID), ready, strings.Join(notes, "; "))
	}
	w.Flush()
}

func pid(p int) string {
	if p == 0 {
		return "-"
	}
	return fmt.Sprint(p)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
