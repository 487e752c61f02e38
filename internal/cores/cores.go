// Package cores says how many cores one request's work may use at a time. The server's
// admission (internal/request) narrows an expensive request to one core while cheaper
// requests need the others; the code that spreads a request's work over goroutines asks
// before each piece of it: wire.Stream's encoders (a list's objects) and the index's
// scans (a count's shards).
package cores

import (
	"context"
	"runtime"
)

type key struct{}

// Limit returns a context under which a request's work runs on at most n() goroutines,
// asked again before every piece of work.
func Limit(ctx context.Context, n func() int) context.Context {
	return context.WithValue(ctx, key{}, n)
}

// Allowed is how many goroutines the work under ctx may use now: Limit's n(), or
// GOMAXPROCS when ctx sets none.
func Allowed(ctx context.Context) int {
	if n, ok := ctx.Value(key{}).(func() int); ok {
		return n()
	}
	return runtime.GOMAXPROCS(0)
}
