package request

import (
	"bufio"
	"context"
	"io"
	"math"
	"net/http"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// writeBuffer is how much of a streamed list is buffered before it is sent.
const writeBuffer = 32 << 10

// wholeChunk is how many items a list answered whole reads from the index at a time:
// reading every remaining item for each answer would make a list cut at the response cap
// N times read the index N times over.
const wholeChunk = 5000

// Answer is an admitted list's result. It holds its seats (fairness.go) until Close.
type Answer struct {
	// ListResult is the list (List), or its first chunk (StreamList).
	*aggregator.ListResult
	ctx     context.Context
	max     int
	release func()
	// more reads the next chunk of a list answered whole after cont; nil when the
	// result is complete.
	more func(cont string) (*aggregator.ListResult, error)
}

// List admits a list and queries the index: the admission waits its client's turn for
// seats as wide as the list (q.Limit items, or every seat for a whole list). The answer
// holds every item selected (up to q.Limit): for encoders that build the answer before
// writing it. Close the answer once it is written.
func (p *Pipeline) List(r *http.Request, q aggregator.Query) (*Answer, error) {
	return p.list(r, q, false)
}

// StreamList is List for a streamed answer (Answer.Stream): a whole list (q.Limit 0) is
// read from the index wholeChunk items at a time as it is written.
func (p *Pipeline) StreamList(r *http.Request, q aggregator.Query) (*Answer, error) {
	return p.list(r, q, true)
}

func (p *Pipeline) list(r *http.Request, q aggregator.Query, chunked bool) (*Answer, error) {
	ctx, release, err := p.adm.admit(r, "list", q.Limit)
	if err != nil {
		return nil, err
	}
	a := &Answer{ctx: ctx, max: p.opts.MaxResponseBytes, release: release}
	if chunked && q.Limit == 0 {
		q.Limit = p.chunk
		a.more = func(cont string) (*aggregator.ListResult, error) {
			next := q
			next.Continue = cont
			return p.ix.List(ctx, next)
		}
	}
	if a.ListResult, err = p.ix.List(ctx, q); err != nil {
		release()
		return nil, err
	}
	return a, nil
}

// Uncapped lifts the response cap, for a list asked at once (Read.AtOnce).
func (a *Answer) Uncapped() { a.max = math.MaxInt }

// Close gives the list's seats back.
func (a *Answer) Close() { a.release() }

// ListEncoder is how a face writes a list; the pipeline streams the items through it.
type ListEncoder struct {
	// Head is written before the first item.
	Head []byte
	// Item appends one item's encoding; items are separated by Sep, a comma unless set.
	Item func(dst []byte, it aggregator.Item) ([]byte, error)
	Sep  byte
	// Tail appends what follows the last item, given the continue token ("" when the
	// list is complete).
	Tail func(dst []byte, cont string) []byte
}

// Stream writes the answer to out through enc as it is encoded (never held whole), cut
// at MaxResponseBytes with a continue token. An error means the response is cut short:
// its status line is sent, so a cut response is all a client can be told.
func (a *Answer) Stream(out io.Writer, enc ListEncoder) error {
	bw := bufio.NewWriterSize(out, writeBuffer)
	_, _ = bw.Write(enc.Head)
	sep := enc.Sep
	if sep == 0 {
		sep = ','
	}
	res := a.ListResult
	b := &Budget{left: a.max, res: res}
	var werr error
	for {
		items := res.Items
		err := wire.Stream(a.ctx, len(items), func(dst []byte, i int) ([]byte, error) { return enc.Item(dst, items[i]) },
			func(i int, item []byte) bool {
				if !b.Fit(i, len(item)) {
					return false
				}
				if b.sent > 1 {
					_ = bw.WriteByte(sep)
				}
				_, werr = bw.Write(item)
				return werr == nil
			})
		if err == nil {
			err = werr // the client is gone
		}
		if err != nil {
			return err
		}
		if b.cont != "" || a.more == nil || res.Continue == "" {
			break
		}
		// The next chunk of a whole list, from where this one ended.
		if res, err = a.more(res.Continue); err != nil {
			return err
		}
		b.next(res)
	}
	_, _ = bw.Write(enc.Tail(nil, b.Continue()))
	return bw.Flush()
}

// Budget is the response cap of one answer, for encoders that build the answer before
// writing it (protobuf lists).
func (a *Answer) Budget() *Budget {
	return &Budget{left: a.max, res: a.ListResult}
}

// Budget cuts a list at the response cap: the first item that no longer fits ends it, and
// the list continues from the item before.
type Budget struct {
	left int
	res  *aggregator.ListResult
	// prev is the token after the previous chunk's last item (a chunked whole list).
	prev string
	sent int
	cont string
}

// Fit reports whether item i of the current chunk, n bytes encoded, is still sent. The
// first item of an answer always is, whatever its size.
func (b *Budget) Fit(i, n int) bool {
	if b.sent > 0 && n > b.left {
		if i > 0 {
			b.cont = b.res.ContinueAfter(i - 1)
		} else {
			b.cont = b.prev
		}
		return false
	}
	b.left -= n
	b.sent++
	return true
}

// next moves the budget to the next chunk of a whole list.
func (b *Budget) next(res *aggregator.ListResult) {
	b.prev, b.res = b.res.Continue, res
}

// Continue is the token that resumes the list after what was sent; "" when all was.
func (b *Budget) Continue() string {
	if b.cont != "" {
		return b.cont
	}
	return b.res.Continue
}
