package request

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// A client with many lists waiting does not hold back another client's: seats go to the
// flows in turn.
func TestFairQueueServesFlowsInTurn(t *testing.T) {
	q := newFairQueue(1, 100)
	hold, err := q.acquire(context.Background(), "busy", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	enqueue := func(flow string) {
		queued := q.waiting.Load()
		wg.Go(func() {
			release, err := q.acquire(context.Background(), flow, 1, time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, flow)
			mu.Unlock()
			release()
		})
		testfleet.Eventually(t, 10*time.Second, flow+" queued", func() (bool, string) { // in this order
			return q.waiting.Load() > queued, "not yet"
		})
	}
	for range 5 {
		enqueue("busy")
	}
	enqueue("other")
	hold()
	wg.Wait()
	if len(order) != 6 || order[1] != "other" {
		t.Errorf("served in order %v: the other client should come second", order)
	}
	if q.used != 0 || len(q.ring) != 0 || len(q.flows) != 0 {
		t.Errorf("left behind: %d seats used, %d flows", q.used, len(q.flows))
	}
}

func TestFairQueueLimits(t *testing.T) {
	q := newFairQueue(2, 1)
	wide, err := q.acquire(context.Background(), "a", 5, time.Minute) // capped to 2 seats
	if err != nil || q.used != 2 {
		t.Fatalf("wide list: %v, %d seats used", err, q.used)
	}
	done := make(chan error, 1)
	go func() {
		_, err := q.acquire(context.Background(), "b", 1, time.Second)
		done <- err
	}()
	testfleet.Eventually(t, 10*time.Second, "b queued", func() (bool, string) { return q.waiting.Load() == 1, "not yet" })
	if _, err := q.acquire(context.Background(), "b", 1, time.Minute); !errors.Is(err, errQueueFull) {
		t.Errorf("second waiter of a full flow: %v, want errQueueFull", err)
	}
	if err := <-done; !errors.Is(err, errQueueWait) {
		t.Errorf("waiter past its wait: %v, want errQueueWait", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.acquire(ctx, "c", 1, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled waiter: %v", err)
	}
	wide()
	wide() // twice: released once
	if q.used != 0 || q.waiting.Load() != 0 {
		t.Errorf("after release: %d seats used, %d waiting", q.used, q.waiting.Load())
	}
}

func TestListWidth(t *testing.T) {
	for _, tc := range []struct{ limit, want int }{
		{0, 4}, // a whole list: every seat
		{1, 1}, {500, 1}, {1999, 1}, {2000, 2}, {5000, 3}, {100000, 4},
	} {
		if got := listWidth(tc.limit, 4); got != tc.want {
			t.Errorf("limit %d: width %d, want %d", tc.limit, got, tc.want)
		}
	}
}

// A count that reads a field from every object (no index answers its field selector) is
// admitted as a whole list is: it waits for a seat, and gives up when its client goes.
// Counts that read no object never wait; a count runs under its request's context.
func TestCountsThatReadObjectsAreAdmitted(t *testing.T) {
	p := New(testIndex(t, 50), Options{ListSeats: 1})
	r := httptest.NewRequest("GET", "/api/v1/count", nil)
	query := func(fields string) aggregator.Query {
		q, err := p.Query(r, Read{Resource: "pods", FieldSelector: fields})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	list, err := p.List(r, query(""))
	if err != nil {
		t.Fatal(err)
	}
	// The only seat is taken: a count by cluster answers at once.
	res, err := p.Count(r, query(""), []string{"cluster"})
	if err != nil || res.Total != 50 || len(res.Groups) != 2 {
		t.Fatalf("cheap count: %v %+v", err, res)
	}
	// One that reads every pod's scheduler waits for the seat, until its client goes.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Count(r.WithContext(ctx), query("spec.schedulerName!=x"), nil)
		done <- err
	}()
	testfleet.Eventually(t, 10*time.Second, "the count queued", func() (bool, string) {
		return p.adm.lists.waiting.Load() == 1, fmt.Sprintf("%d waiting", p.adm.lists.waiting.Load())
	})
	cancel()
	if err := <-done; !errors.As(err, &TooMany{}) || !strings.Contains(err.Error(), "count not served") {
		t.Fatalf("count whose client went while it waited: %v", err)
	}
	list.Close()
	// With other requests in flight the count runs on one core, and answers.
	for range 3 {
		defer p.Enter()()
	}
	res, err = p.Count(r, query("spec.schedulerName!=x"), []string{"field:spec.schedulerName"})
	if err != nil || res.Total != 50 || len(res.Groups) != 1 || res.Groups[0].Values[0] != "" {
		t.Fatalf("count once the seat is free: %v %+v", err, res)
	}
	if p.adm.lists.used != 0 {
		t.Errorf("%d seats still used", p.adm.lists.used)
	}
	// Under a request whose client has gone, a count that scans stops.
	gone, cancelGone := context.WithCancel(context.Background())
	cancelGone()
	if _, err := p.Count(r.WithContext(gone), query("metadata.name!=x"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("count of a client that went: %v, want context.Canceled", err)
	}
}
