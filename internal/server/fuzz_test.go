package server

import (
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/request"
)

// FuzzParseQuery: any query string is either accepted or refused with a
// request.BadParam that names a parameter; nothing panics.
func FuzzParseQuery(f *testing.F) {
	for _, q := range []string{
		"resource=pods&labelSelector=app%3Dweb&limit=10",
		"resource=pods&fieldSelector=status.phase%3DRunning&cluster=a*&namespace=default",
		"resource=&limit=-1", "resource=pods&limit=99999999999999999999", "resource=pods&cluster=[",
		"resource=pods&namespace=Bad_NS", "labelselector=x", "resource=pods&continue=%%%",
	} {
		f.Add(q)
	}
	ix := aggregator.New(nil, aggregator.Options{})
	a := &api{ix: ix, p: request.New(ix, request.Options{})}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/api/v1/objects", nil)
		r.URL.RawQuery = raw
		_, err := a.parseQuery(r, true)
		var bp request.BadParam
		if err != nil && !errors.As(err, &bp) {
			t.Errorf("%q: error %v is not a BadParam", raw, err)
		}
		if err != nil && bp.Name == "" {
			t.Errorf("%q: BadParam names no parameter", raw)
		}
	})
}
