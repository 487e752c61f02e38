package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPollCallsOnChangeOncePerChange(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	if err := os.WriteFile(a, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	changes := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Poll(ctx, 10*time.Millisecond, StampOf(a), func() []string { return []string{a} }, func() { changes <- struct{}{} })
	wait := func(what string) {
		t.Helper()
		select {
		case <-changes:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no change noticed", what)
		}
	}
	s0 := StampOf(a)
	if err := os.WriteFile(a, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	wait("rewrite")
	if StampOf(a) == s0 {
		t.Error("stamp did not change with the contents")
	}
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	wait("removal")
	// Same contents written again with an old mtime still count as a change from "gone".
	if err := os.WriteFile(a, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(a, time.Unix(0, 0), time.Unix(0, 0))
	wait("re-creation")
	if StampOf(a) == s0 || StampOf(a) != StampOf(a) {
		t.Error("stamps are not a function of the contents")
	}
	select {
	case <-changes:
		t.Error("a change reported although nothing changed")
	case <-time.After(100 * time.Millisecond):
	}
}

// BenchmarkStampOf checks a kubeconfig of 1,000 contexts' size (about 2.5 MB): the
// polling daemon does this every reload interval.
func BenchmarkStampOf(b *testing.B) {
	p := filepath.Join(b.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, make([]byte, 2500<<10), 0o600); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for range b.N {
		StampOf(p)
	}
}
