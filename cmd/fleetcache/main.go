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
	"os"
	"path/filepath"
	"strings"

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
	case "get", "count", "clusters", "watch":
		if err := runClient(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
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
  fleetcache version         print the version
The client commands talk to a running daemon (--server, default http://127.0.0.1:8080).
Installed on PATH as kubectl-fleet, they work as a kubectl plugin: kubectl fleet get pods -A.
Run "fleetcache serve -h" for the flags.
`)
}
