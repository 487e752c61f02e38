package aggregator

import (
	"encoding/base64"
	"errors"
	"testing"
)

func TestHistoryGrowsOnDemandThenRings(t *testing.T) {
	h := newHistory(4)
	if cap(h.events) != 0 {
		t.Fatalf("a new history holds %d slots before any event", cap(h.events))
	}
	for rv := uint64(1); rv <= 3; rv++ {
		h.add(Event{RV: rv})
	}
	if evs, ok := h.since(1); !ok || len(evs) != 2 || evs[0].RV != 2 || evs[1].RV != 3 {
		t.Fatalf("since 1 before the ring is full: %v %v", evs, ok)
	}
	for rv := uint64(4); rv <= 6; rv++ {
		h.add(Event{RV: rv})
	}
	if len(h.events) != 4 {
		t.Fatalf("ring grew to %d, size 4", len(h.events))
	}
	if _, ok := h.since(1); ok {
		t.Error("a cursor before evicted events was served")
	}
	evs, ok := h.since(2)
	if !ok || len(evs) != 4 || evs[0].RV != 3 || evs[3].RV != 6 {
		t.Errorf("since 2: %v %v, want 3..6 in order", evs, ok)
	}
}

func TestCursorFromAnotherProcessIsExpired(t *testing.T) {
	c := Cursor{"alpha": 12, "bravo": 7}
	got, err := ParseCursor(c.Encode())
	if err != nil || got["alpha"] != 12 || got["bravo"] != 7 {
		t.Fatalf("round trip: %v %v", got, err)
	}
	foreign := base64.RawURLEncoding.EncodeToString([]byte(`{"e":"another","p":{"alpha":12}}`))
	if _, err := ParseCursor(foreign); !errors.Is(err, ErrExpired) {
		t.Errorf("a cursor from another process: %v, want ErrExpired", err)
	}
	if _, err := ParseCursor("not a cursor"); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("garbage: %v, want ErrInvalidToken", err)
	}
}
