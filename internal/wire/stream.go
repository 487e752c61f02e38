package wire

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/fleetcache/fleetcache/internal/cores"
)

// batchSize is how many items one encoder goroutine takes at a time: large enough that
// handing out work costs nothing next to encoding it, small enough that the first bytes
// leave early and memory stays bounded (at most 2 × GOMAXPROCS batches are held).
const batchSize = 64

// batches are reused across streams: a page's encodings are garbage the moment they are
// written.
var batches = sync.Pool{New: func() any { return &batch{ends: make([]int, 0, batchSize)} }}

// batch is the encodings of up to batchSize consecutive items, item k ending at ends[k].
type batch struct {
	buf  []byte
	ends []int
	err  error
	errI int
}

// yield: encoders step aside after every batch (well under a millisecond of work), so
// that a cheap request that just arrived waits for a batch, not for the scheduler's 10 ms
// time slice.

// parkInterval is how long an encoder that may not run waits before it asks again.
const parkInterval = 200 * time.Microsecond

// EncodeFunc appends item i's encoding to dst.
type EncodeFunc func(dst []byte, i int) ([]byte, error)

// WriteFunc receives item i's encoding, in order; returning false stops the stream (the
// client is gone, or the response is as large as it may be).
type WriteFunc func(i int, encoded []byte) bool

// Stream encodes items 0..n-1 with enc on up to GOMAXPROCS goroutines and hands each
// encoding to write in order, as soon as its batch is ready. It returns the first
// encoding error (write is not called for that item or any later one), and stops early
// when write returns false or ctx ends.
func Stream(ctx context.Context, n int, enc EncodeFunc, write WriteFunc) error {
	if n == 0 {
		return nil
	}
	nBatches := (n + batchSize - 1) / batchSize
	workers := min(runtime.GOMAXPROCS(0), nBatches)
	if workers <= 1 {
		// One batch or one core: no goroutines, no channels.
		bt := batches.Get().(*batch)
		defer batches.Put(bt)
		for b := 0; b < nBatches; b++ {
			bt.buf, bt.ends = bt.buf[:0], bt.ends[:0]
			lo, hi := b*batchSize, min(n, (b+1)*batchSize)
			for i := lo; i < hi; i++ {
				var err error
				if bt.buf, err = enc(bt.buf, i); err != nil {
					return err
				}
				bt.ends = append(bt.ends, len(bt.buf))
			}
			start := 0
			for k, end := range bt.ends {
				if !write(lo+k, bt.buf[start:end]) {
					return nil
				}
				start = end
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			runtime.Gosched() // see yield
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // in this order: cancelling unblocks the feeder
	// Each batch has its own result channel; the writer reads them in order. A window of
	// 2 × workers batches bounds memory: encoders wait for the writer.
	window := make(chan struct{}, 2*workers)
	results := make([]chan *batch, nBatches)
	for i := range results {
		results[i] = make(chan *batch, 1)
	}
	next := make(chan int)
	go func() {
		defer close(next)
		for b := 0; b < nBatches; b++ {
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case next <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	for k := range workers {
		wg.Go(func() {
			var park *time.Timer
			for {
				// The server narrows a list to one core while cheaper requests need the
				// others (cores.Limit): asked before every batch.
				if k > 0 && k >= cores.Allowed(ctx) {
					if park == nil {
						park = time.NewTimer(parkInterval)
						defer park.Stop()
					} else {
						park.Reset(parkInterval)
					}
					select {
					case <-ctx.Done():
						return
					case <-park.C:
						continue
					}
				}
				b, ok := <-next
				if !ok {
					return
				}
				out := batches.Get().(*batch)
				out.buf, out.ends, out.err = out.buf[:0], out.ends[:0], nil
				lo, hi := b*batchSize, min(n, (b+1)*batchSize)
				for i := lo; i < hi && ctx.Err() == nil; i++ {
					var err error
					if out.buf, err = enc(out.buf, i); err != nil {
						out.err, out.errI = err, i
						break
					}
					out.ends = append(out.ends, len(out.buf))
				}
				results[b] <- out
				runtime.Gosched() // see yield
			}
		})
	}
	for b := 0; b < nBatches; b++ {
		var out *batch
		select {
		case out = <-results[b]:
		case <-ctx.Done():
			return ctx.Err()
		}
		start, lo := 0, b*batchSize
		for k, end := range out.ends {
			if !write(lo+k, out.buf[start:end]) {
				return nil
			}
			start = end
		}
		if out.err != nil {
			return out.err
		}
		batches.Put(out)
		<-window
	}
	return nil
}
