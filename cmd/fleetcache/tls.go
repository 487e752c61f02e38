package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/internal/filewatch"
)

// certReloadInterval is how often the certificate files are checked: a rotation
// (cert-manager, a renewed Secret) takes effect within it, without a restart.
const certReloadInterval = time.Second

// reloadingCert serves the certificate in certFile/keyFile and loads it again when
// either file changes. A broken new pair is logged and the last good one kept.
type reloadingCert struct {
	certFile, keyFile string

	mu   sync.RWMutex
	cert *tls.Certificate
}

// loadCert loads the pair once; the error is for start-up, where a bad pair is fatal.
func loadCert(certFile, keyFile string) (*reloadingCert, error) {
	r := &reloadingCert{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *reloadingCert) load() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	r.mu.Lock()
	r.cert = &cert
	r.mu.Unlock()
	return nil
}

// watch reloads the pair whenever the files change, until ctx ends; since is their stamp
// when loadCert read them.
func (r *reloadingCert) watch(ctx context.Context, since filewatch.Stamp, log *zap.Logger) {
	filewatch.Poll(ctx, certReloadInterval, since, func() []string { return []string{r.certFile, r.keyFile} }, func() {
		if err := r.load(); err != nil {
			log.Error("TLS certificate not reloaded; serving the previous one", zap.Error(err))
			return
		}
		log.Info("TLS certificate reloaded", zap.String("certFile", r.certFile))
	})
}

func (r *reloadingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}
