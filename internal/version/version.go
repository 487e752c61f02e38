// Package version holds the build's version, stamped by the Makefile and the Dockerfile
// through -ldflags "-X github.com/fleetcache/fleetcache/internal/version.Version=...".
package version

// Version is the release or git description of this build; "dev" when not stamped.
var Version = "dev"
