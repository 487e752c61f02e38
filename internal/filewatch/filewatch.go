// Package filewatch notices when files change: the kubeconfig, the token file, TLS
// certificates. It compares contents, not modification times: Kubernetes updates a
// mounted Secret by swapping a symlink, and copies can keep the old mtime.
package filewatch

import (
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// Stamp summarises the contents of paths; it changes when any of them changes, appears or
// disappears.
type Stamp [sha256.Size]byte

// StampOf reads paths and returns their stamp.
func StampOf(paths ...string) Stamp {
	h := sha256.New()
	for _, p := range paths {
		h.Write([]byte(p))
		h.Write([]byte{0})
		b, err := os.ReadFile(p)
		if err != nil {
			h.Write([]byte(err.Error()))
		}
		h.Write(b)
		h.Write([]byte{0})
	}
	var s Stamp
	copy(s[:], h.Sum(nil))
	return s
}

// Poll calls onChange each time the contents of paths() differ from what they were at
// the previous check, checking every interval until ctx ends; since is their stamp when
// the caller last read them (take it before reading, so that no change is missed).
// paths is asked again each time: the set may change.
func Poll(ctx context.Context, interval time.Duration, since Stamp, paths func() []string, onChange func()) {
	last := since
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if now := StampOf(paths()...); now != last {
				last = now
				onChange()
			}
		}
	}
}
