package aggregator

import (
	"context"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/watch"
)

// TestWatchInitialEventsThenChanges: with InitialEvents a watch starts with the selected
// objects as ADDED, then the bookmark that ends them carrying the snapshot's position,
// then changes made after the snapshot exactly once; a watch resumed from that bookmark's
// cursor sees the same changes.
func TestWatchInitialEventsThenChanges(t *testing.T) {
	f := seedFixture(t)
	q := Query{Resource: "pods", LabelSelector: mustLabels(t, "app=web")}
	w, err := f.ix.WatchWith(context.Background(), q, WatchOptions{InitialEvents: true, From: Cursor{"a": 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	f.add("c", f.pod("web", "c2", "n", "Running", map[string]string{"app": "web"}))
	evs := collect(t, w, 4)
	if got := fmt.Sprint(describe(evs)); got != "[ADDED a/a2 ADDED b/b1 BOOKMARK ADDED c/c2]" {
		t.Errorf("events: %s", got)
	}
	end := evs[2].Object.(*WatchItem)
	if evs[2].Type != watch.Bookmark || !end.InitialEventsEnd || evs[0].Object.(*WatchItem).Cursor != end.Cursor {
		t.Errorf("end of initial events: %s %+v; the initial events' cursor %s", evs[2].Type, end, evs[0].Object.(*WatchItem).Cursor)
	}
	from, err := ParseCursor(end.Cursor)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := f.ix.Watch(context.Background(), q, from)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	if got := fmt.Sprint(describe(collect(t, w2, 2))); got != "[BOOKMARK ADDED c/c2]" {
		t.Errorf("resumed from the initial events' end: %s", got)
	}
	// Without InitialEvents the starting bookmark does not claim to end initial events.
	w3, err := f.ix.Watch(context.Background(), q, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Stop()
	if ev := collect(t, w3, 1)[0]; ev.Object.(*WatchItem).InitialEventsEnd {
		t.Error("a plain watch's first bookmark is marked as the end of initial events")
	}
}
