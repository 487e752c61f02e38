package server

import (
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/fleetcache/fleetcache/aggregator"
)

// FuzzParseQuery: any query string is either accepted or refused with a badParam that
// names a parameter; nothing panics.
func FuzzParseQuery(f *testing.F) {
	for _, q := range []string{
		"resource=pods&labelSelector=app%3Dweb&limit=10",
		"resource=pods&fieldSelector=status.phase%3DRunning&cluster=a*&namespace=default",
		"resource=&limit=-1", "resource=pods&limit=99999999999999999999", "resource=pods&cluster=[",
		"resource=pods&namespace=Bad_NS", "labelselector=x", "resource=pods&continue=%%%",
	} {
		f.Add(q)
	}
	a := &api{opts: Options{DefaultLimit: 500, MaxLimit: 5000}, ix: aggregator.New(nil, aggregator.Options{})}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/api/v1/objects", nil)
		r.URL.RawQuery = raw
		_, err := a.parseQuery(r, true)
		var bp badParam
		if err != nil && !errors.As(err, &bp) {
			t.Errorf("%q: error %v is not a badParam", raw, err)
		}
		if err != nil && bp.name == "" {
			t.Errorf("%q: badParam names no parameter", raw)
		}
	})
}
