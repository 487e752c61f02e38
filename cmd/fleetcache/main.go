// Command fleetcache keeps a live, indexed, in-memory copy of many Kubernetes clusters and
// answers fleet-wide questions from it.
//
//	fleetcache serve [flags]   run the daemon
//	fleetcache version         print the version
package main

import (
	"fmt"
	"os"

	"github.com/fleetcache/fleetcache/internal/version"
)

func main() {
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
  fleetcache version         print the version
Run "fleetcache serve -h" for the flags.
`)
}
