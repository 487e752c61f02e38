package sharding

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
)

// PeerClient is the client a router asks its peers with. roots, when set, are the CAs a
// peer's certificate may be signed by (LoadPeerCA); nil trusts the system's.
func PeerClient(roots *x509.CertPool) *http.Client {
	// Each request is bounded by its context: answers (Timeout), streams (the caller). A
	// page asks every replica twice at once (counts, and its first run), and many callers
	// share the replicas: keep enough idle connections to each (the default transport
	// keeps 2 per host, closing and dialling again under any concurrency).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	if roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}
}

// LoadPeerCA reads a PEM file of CA certificates (sharding.peerCAFile) and returns them
// with the system's roots: replicas serving certificates of a private CA are trusted
// without trusting that CA for anything else the process does.
func LoadPeerCA(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("sharding.peerCAFile: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool() // no system roots on this machine: the file's only
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("sharding.peerCAFile %s: no PEM certificate in it", file)
	}
	return pool, nil
}
