// Package filewatch notices when files change: the kubeconfig, the token file, TLS
// certificates. It compares contents, not modification times: Kubernetes updates a
// mounted Secret by swapping a symlink, and copies can keep the old mtime.
package filewatch

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"time"
)

// Stamp summarises the contents of paths; it changes when any of them changes, appears or
// disappears.
type Stamp [sha256.Size]byte

// StampOf reads paths and returns their stamp. Files are streamed through the hash, not
// read whole: a kubeconfig of 1,000 contexts is megabytes, checked every few seconds, and
// reading it into memory each time was most of an idle daemon's garbage.
func StampOf(paths ...string) Stamp {
	h := sha256.New()
	buf := make([]byte, 32<<10)
	for _, p := range paths {
		h.Write([]byte(p))
		h.Write([]byte{0})
		if err := hashFile(h, p, buf); err != nil {
			h.Write([]byte(err.Error()))
		}
		h.Write([]byte{0})
	}
	var s Stamp
	h.Sum(s[:0])
	return s
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
