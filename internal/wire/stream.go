package wire

import (
	"context"
	"runtime"
	"sync"
)

// batchSize is how many items one encoder goroutine takes at a time: large enough that
// handing out work costs nothing next to encoding it, small enough that the first bytes
// leave early and memory stays bounded (at most 2 × GOMAXPROCS batches are held).
const batchSize = 64

// batch is the encodings of up to batchSize consecutive items, item k ending at ends[k].
type batch struct {
	buf  []byte
	ends []int
	err  error
	errI int
}

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
	batches := (n + batchSize - 1) / batchSize
	workers := min(runtime.GOMAXPROCS(0), batches)
	if workers <= 1 {
		// One batch or one core: no goroutines, no channels.
		var buf []byte
		ends := make([]int, 0, batchSize)
		for b := 0; b < batches; b++ {
			buf, ends = buf[:0], ends[:0]
			lo, hi := b*batchSize, min(n, (b+1)*batchSize)
			for i := lo; i < hi; i++ {
				var err error
				if buf, err = enc(buf, i); err != nil {
					return err
				}
				ends = append(ends, len(buf))
			}
			start := 0
			for k, end := range ends {
				if !write(lo+k, buf[start:end]) {
					return nil
				}
				start = end
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // in this order: cancelling unblocks the feeder
	// Each batch has its own result channel; the writer reads them in order. A window of
	// 2 × workers batches bounds memory: encoders wait for the writer.
	window := make(chan struct{}, 2*workers)
	results := make([]chan *batch, batches)
	for i := range results {
		results[i] = make(chan *batch, 1)
	}
	next := make(chan int)
	go func() {
		defer close(next)
		for b := 0; b < batches; b++ {
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
	pool := sync.Pool{New: func() any { return &batch{ends: make([]int, 0, batchSize)} }}
	for range workers {
		wg.Go(func() {
			for b := range next {
				out := pool.Get().(*batch)
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
			}
		})
	}
	for b := 0; b < batches; b++ {
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
		pool.Put(out)
		<-window
	}
	return nil
}
