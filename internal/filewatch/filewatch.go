// Package filewatch notices when files change: the kubeconfig, the token file, TLS
// certificates. It compares contents, not modification times: Kubernetes updates a
// mounted Secret by swapping a symlink, and copies can keep the old mtime.
package filewatch

import (
	"context"
	"hash/maphash"
	"io"
	"os"
	"time"
)

// Stamp summarises the contents of paths; it changes when any of them changes, appears or
// disappears. Stamps compare within one process only.
type Stamp uint64

// seed makes stamps comparable within the process.
var seed = maphash.MakeSeed()

// StampOf reads paths and returns their stamp. Files are streamed through a fast
// non-cryptographic hash (a change detector, not a signature), not read whole: a
// kubeconfig of 1,000 contexts is megabytes, checked every few seconds; read whole and
// hashed with SHA-256 it was most of an idle daemon's garbage and 3% of its CPU.
func StampOf(paths ...string) Stamp {
	var h maphash.Hash
	h.SetSeed(seed)
	buf := make([]byte, 32<<10)
	for _, p := range paths {
		h.WriteString(p)
		h.WriteByte(0)
		if err := hashFile(&h, p, buf); err != nil {
			h.WriteString(err.Error())
		}
		h.WriteByte(0)
	}
	return Stamp(h.Sum64())
}

func hashFile(h io.Writer, path string, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	// Through a plain Reader: *os.File's WriterTo would allocate a buffer of its own.
	_, err = io.CopyBuffer(h, struct{ io.Reader }{f}, buf)
	return err
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
