package request

import (
	"bufio"
	"context"
	"io"
	"net/http"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// writeBuffer is how much of a streamed list is buffered before it is sent.
const writeBuffer = 32 << 10

// Answer is an admitted list's result. It holds its seats (fairness.go) until Close.
type Answer struct {
	*aggregator.ListResult
	ctx     context.Context
	max     int
	release func()
}

// List admits a list and queries the index: the admission waits its client's turn for
// seats as wide as the list (q.Limit items, or every seat for a whole list). Close the
// answer once it is written.
func (p *Pipeline) List(r *http.Request, q aggregator.Query) (*Answer, error) {
	ctx, release, err := p.adm.admit(r, q.Limit)
	if err != nil {
		return nil, err
	}
	res, err := p.ix.List(q)
	if err != nil {
		release()
		return nil, err
	}
	return &Answer{ListResult: res, ctx: ctx, max: p.opts.MaxResponseBytes, release: release}, nil
}

// Close gives the list's seats back.
func (a *Answer) Close() { a.release() }

// Context is the context to encode the answer under (it carries the parallelism the
// admission allows).
func (a *Answer) Context() context.Context { return a.ctx }

// ListEncoder is how a face writes a list; the pipeline streams the items through it.
type ListEncoder struct {
	// Head is written before the first item.
	Head []byte
	// Item appends item i's encoding; items are separated by commas.
	Item wire.EncodeFunc
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
	b := a.Budget()
	err := wire.Stream(a.ctx, len(a.Items), enc.Item, func(i int, item []byte) bool {
		if !b.Fit(i, len(item)) {
			return false
		}
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		_, err := bw.Write(item)
		return err == nil
	})
	if err != nil {
		return err
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
	cont string
}

// Fit reports whether item i, n bytes encoded, is still sent. The first item always is,
// whatever its size.
func (b *Budget) Fit(i, n int) bool {
	if i > 0 && n > b.left {
		b.cont = b.res.ContinueAfter(i - 1)
		return false
	}
	b.left -= n
	return true
}

// Continue is the token that resumes the list after what was sent; "" when all was.
func (b *Budget) Continue() string {
	if b.cont != "" {
		return b.cont
	}
	return b.res.Continue
}
