package request

import (
	"context"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/watch"

	"github.com/fleetcache/fleetcache/aggregator"
)

// Watch opens a watch of what q selects.
func (p *Pipeline) Watch(ctx context.Context, q aggregator.Query, opts aggregator.WatchOptions) (watch.Interface, error) {
	return p.ix.WatchWith(ctx, q, opts)
}

// Stream serves a watch stream whose status line is sent: it hands each event to send
// and, every tick (when tick > 0), a nil event (heartbeats, bookmarks). Every write gets
// StreamWriteTimeout (a client that stops reading is disconnected instead of holding the
// stream) and is flushed. It returns when ctx ends (the client left, its timeout), the
// events end, send fails, or the server shuts down: the one place every face's streams
// end on shutdown, cleanly (the chunked response is terminated).
func (p *Pipeline) Stream(ctx context.Context, w http.ResponseWriter, events <-chan watch.Event, tick time.Duration, send func(*watch.Event) error) {
	rc := http.NewResponseController(w)
	var ticks <-chan time.Time
	if tick > 0 {
		t := time.NewTicker(tick)
		defer t.Stop()
		ticks = t.C
	}
	for {
		var ev *watch.Event
		select {
		case <-ctx.Done():
			return
		case <-p.streams.Done():
			return
		case <-ticks:
		case e, ok := <-events:
			if !ok {
				return
			}
			ev = &e
		}
		_ = rc.SetWriteDeadline(time.Now().Add(p.opts.StreamWriteTimeout))
		if err := send(ev); err != nil {
			return
		}
		_ = rc.Flush()
	}
}
