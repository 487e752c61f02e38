// Command fleetcache keeps a live, indexed, in-memory copy of many Kubernetes clusters and
// answers fleet-wide questions from it.
package main

import (
	"fmt"
	"os"

	"github.com/fleetcache/fleetcache/internal/version"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Println("fleetcache", version.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: fleetcache version")
	os.Exit(2)
}
