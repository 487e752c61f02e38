// Command fleetcache keeps a live, indexed, in-memory copy of many Kubernetes clusters and
// answers fleet-wide questions from it.
//
//	fleetcache serve [flags]        run the daemon
//	fleetcache get|count|watch ...  query a running daemon (also as kubectl fleet ...)
//	fleetcache clusters             the fleet's status
//	fleetcache version              print the version
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fleetcache/fleetcache/internal/version"
)

func main() {
	// Installed as kubectl-fleet, the binary is a kubectl plugin: kubectl fleet get pods.
	if strings.HasPrefix(filepath.Base(os.Args[0]), "kubectl-fleet") && len(os.Args) > 1 && os.Args[1] == "serve" {
		fmt.Fprintln(os.Stderr, "kubectl fleet: run the daemon as fleetcache serve")
		os.Exit(2)
	}
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		if err := serve(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fleetcache:", err)
			os.Exit(1)
		}
	case "get", "count", "clusters", "watch", "kubeconfig":
		if err := runClient(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
	case "probe":
		// For exec probes and container health checks where kubelet's HTTP probes cannot
		// reach (a sidecar listening on loopback) and the image has no curl.
		if err := probe(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
	case "version", "--version":
		fmt.Println("fleetcache", version.Version)
	case "help", "-h", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "fleetcache: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  fleetcache serve [flags]   cache every selected kubeconfig context and serve the API
  fleetcache get RESOURCE [-l SEL] [--field-selector SEL] [--cluster GLOB] [-n NS | -A] [-o wide|json|yaml|name]
  fleetcache count RESOURCE [--by cluster,namespace,label:KEY,field:PATH] [filters as for get]
  fleetcache watch RESOURCE [filters as for get] [-o json]
  fleetcache clusters        every cluster's phase, objects and freshness
  fleetcache kubeconfig      print a kubeconfig for kubectl: context "fleet" (every cluster)
                             and "fleet-<cluster>" per cluster, all read from the daemon
  fleetcache version         print the version
  fleetcache probe URL       exit 0 if URL answers 200 within 5s (for exec probes)
The client commands talk to a running daemon (--server, default http://127.0.0.1:8080).
Installed on PATH as kubectl-fleet, they work as a kubectl plugin: kubectl fleet get pods -A.
Run "fleetcache serve -h" for the flags.
`)
}

func probe(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: fleetcache probe URL")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s: %s", args[0], resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
