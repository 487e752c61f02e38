package request

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetcache/fleetcache/internal/auth"
	"github.com/fleetcache/fleetcache/internal/cores"
)

// Cheap answers stay cheap under load, after the apiserver's API Priority and Fairness:
// requests are classed by their cost before they run. Single objects, discovery, status
// and counts answered from indexes and labels run at once (bounded only by MaxInFlight).
// Lists (every page, Table or JSON, of either API) share ListSeats: a list is as wide as
// the pages it asks for, and lists that find no seat wait in per-client queues served in
// turn, so one client's pages never starve another's, and a core stays free for the
// cheap requests. A count that reads a field from every object it selects (a field
// selector or group-by no index answers: seconds at a million objects) is as wide as a
// whole list. While cheap requests are running, an admitted request runs on one core;
// alone, on all of them (cores.Limit). Its work stops when its client goes.

var (
	errQueueFull = errors.New("too many of this client's lists are waiting")
	errQueueWait = errors.New("waited too long for a seat")
)

// fairQueue hands out seats to waiters flow by flow, in turn.
type fairQueue struct {
	seats, maxQueue int

	mu    sync.Mutex
	used  int
	flows map[string]*flow
	ring  []*flow // flows with waiters, served round-robin
	next  int

	waiting atomic.Int64
}

type flow struct {
	name    string
	waiters []*waiter
}

type waiter struct {
	width int
	ready chan struct{}
	// granted is set under fairQueue.mu when the waiter got its seats.
	granted bool
}

func newFairQueue(seats, maxQueue int) *fairQueue {
	return &fairQueue{seats: seats, maxQueue: maxQueue, flows: map[string]*flow{}}
}

// acquire takes width seats for a request of flow, waiting its turn at most wait; the
// returned release gives them back.
func (q *fairQueue) acquire(ctx context.Context, flowName string, width int, wait time.Duration) (func(), error) {
	width = min(max(width, 1), q.seats)
	q.mu.Lock()
	if len(q.ring) == 0 && q.used+width <= q.seats {
		q.used += width
		q.mu.Unlock()
		return q.releaser(width), nil
	}
	f := q.flows[flowName]
	if f == nil {
		f = &flow{name: flowName}
		q.flows[flowName] = f
	}
	if len(f.waiters) >= q.maxQueue {
		q.mu.Unlock()
		return nil, errQueueFull
	}
	w := &waiter{width: width, ready: make(chan struct{})}
	if len(f.waiters) == 0 {
		q.ring = append(q.ring, f)
	}
	f.waiters = append(f.waiters, w)
	q.waiting.Add(1)
	q.dispatch()
	q.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	var err error
	select {
	case <-w.ready:
		return q.releaser(width), nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = errQueueWait
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.granted { // granted while we gave up: hand the seats on
		q.used -= width
		q.dispatch()
		return nil, err
	}
	q.remove(f, w)
	return nil, err
}

func (q *fairQueue) releaser(width int) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			q.mu.Lock()
			q.used -= width
			q.dispatch()
			q.mu.Unlock()
		})
	}
}

// dispatch grants seats to the flows' first waiters in turn while they fit. q.mu is held.
func (q *fairQueue) dispatch() {
	for len(q.ring) > 0 {
		q.next %= len(q.ring)
		f := q.ring[q.next]
		w := f.waiters[0]
		if q.used+w.width > q.seats {
			return // the next in turn waits for enough seats: wide lists are not starved
		}
		q.used += w.width
		w.granted = true
		close(w.ready)
		q.waiting.Add(-1)
		f.waiters = f.waiters[1:]
		if len(f.waiters) == 0 {
			q.dropFlow(q.next)
		} else {
			q.next++
		}
	}
}

func (q *fairQueue) remove(f *flow, w *waiter) {
	for i, x := range f.waiters {
		if x == w {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			q.waiting.Add(-1)
			break
		}
	}
	if len(f.waiters) == 0 {
		for i, x := range q.ring {
			if x == f {
				q.dropFlow(i)
				break
			}
		}
	}
	q.dispatch()
}

// dropFlow takes ring[i], now without waiters, out of the rotation.
func (q *fairQueue) dropFlow(i int) {
	delete(q.flows, q.ring[i].name)
	q.ring = append(q.ring[:i], q.ring[i+1:]...)
	if q.next > i {
		q.next--
	}
}

// flowOf names a request's client: its user, or its connection when anonymous.
func flowOf(r *http.Request) string {
	if u := auth.UserFrom(r.Context()); u != nil && u.Name != "" {
		return "user:" + u.Name
	}
	return "conn:" + r.RemoteAddr
}

// listWidth is how many seats a list takes, from the items it may answer with: a page of
// limit items takes one seat per 2,000 (about a millisecond of one core each), a whole
// list (limit 0) every seat.
func listWidth(limit, seats int) int {
	if limit <= 0 {
		return seats
	}
	return min(seats, 1+limit/2000)
}

// admission is the pipeline's list admission: the seats, and what it needs to know of
// the other requests.
type admission struct {
	lists *fairQueue // nil: no list admission (ListSeats < 0)
	seats int
	wait  time.Duration
	// running counts the requests in flight (watch streams excluded), admitted the lists
	// holding seats: while more run than hold seats, a request outside the seats (a
	// count, a get, a waiting list) needs a core, and lists encode on one.
	running, admitted atomic.Int64
}

func newAdmission(o Options) *admission {
	a := &admission{seats: o.ListSeats, wait: o.ListQueueWait}
	if o.ListSeats > 0 {
		a.lists = newFairQueue(o.ListSeats, o.ListQueue)
	}
	return a
}

func (a *admission) parallelism() int {
	if a.running.Load() > a.admitted.Load() {
		return 1
	}
	return runtime.GOMAXPROCS(0)
}

// Enter counts a request (not a watch stream) as running until done is called. The
// server's guard calls it for every request it lets in.
func (p *Pipeline) Enter() (done func()) {
	p.adm.running.Add(1)
	return func() { p.adm.running.Add(-1) }
}

// admit takes the seats of a list of limit items, or of another request as expensive
// (what names it in errors), waiting its turn among the clients, and returns the context
// to run it under and the release of the seats.
func (a *admission) admit(r *http.Request, what string, limit int) (context.Context, func(), error) {
	if a.lists == nil {
		return r.Context(), func() {}, nil
	}
	release, err := a.lists.acquire(r.Context(), flowOf(r), listWidth(limit, a.seats), a.wait)
	if err != nil {
		return nil, nil, TooMany{Msg: what + " not served: " + err.Error() + "; try again shortly", RetryAfter: 1}
	}
	a.admitted.Add(1)
	var once sync.Once
	return cores.Limit(r.Context(), a.parallelism), func() {
		once.Do(func() { a.admitted.Add(-1); release() })
	}, nil
}

// defaultListSeats leaves a core to the cheap requests.
func defaultListSeats() int { return max(1, runtime.GOMAXPROCS(0)-1) }
