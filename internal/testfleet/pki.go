package testfleet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// Static-token users every cluster has.
const (
	AdminUser  = "fleetcache-admin"
	ReaderUser = "fleetcache-reader"
)

// credentials are generated on first start and kept in the cluster's folder, so that a
// restarted cluster accepts the same tokens and serves the same certificate.
type credentials struct {
	servingCert, servingKey string // files
	saKey                   string // file
	tokenFile               string
	AdminToken, ReaderToken string
	CAData                  []byte // PEM bundle a client trusts to reach the apiserver
}

func ensureCredentials(dir string) (*credentials, error) {
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	c := &credentials{
		servingCert: filepath.Join(pki, "serving.crt"),
		servingKey:  filepath.Join(pki, "serving.key"),
		saKey:       filepath.Join(pki, "sa.key"),
		tokenFile:   filepath.Join(pki, "tokens.csv"),
	}

	// A self-signed CA and a serving certificate for 127.0.0.1 and localhost; the returned
	// PEM holds both, which is what clients need as certificate-authority-data.
	if !exists(c.servingCert) || !exists(c.servingKey) {
		crt, key, err := cert.GenerateSelfSignedCertKey("localhost", []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"})
		if err != nil {
			return nil, fmt.Errorf("generate serving certificate: %w", err)
		}
		if err := writeFiles(map[string][]byte{c.servingCert: crt, c.servingKey: key}); err != nil {
			return nil, err
		}
	}
	var err error
	if c.CAData, err = os.ReadFile(c.servingCert); err != nil {
		return nil, err
	}

	// kube-apiserver reads the public half from the private key file as well.
	if _, _, err := keyutil.LoadOrGenerateKeyFile(c.saKey); err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}

	tokens := filepath.Join(pki, "tokens")
	raw, err := os.ReadFile(tokens)
	switch {
	case err == nil && len(raw) == 2*2*tokenBytes+1:
		c.AdminToken, c.ReaderToken = string(raw[:2*tokenBytes]), string(raw[2*tokenBytes+1:])
	case err == nil || errors.Is(err, fs.ErrNotExist):
		c.AdminToken, c.ReaderToken = randomToken(), randomToken()
		if err := writeFiles(map[string][]byte{tokens: []byte(c.AdminToken + "\n" + c.ReaderToken)}); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	// token,user,uid,"groups" as kube-apiserver's --token-auth-file expects.
	csv := fmt.Sprintf("%s,%s,%s-uid,\"system:masters\"\n%s,%s,%s-uid\n",
		c.AdminToken, AdminUser, AdminUser, c.ReaderToken, ReaderUser, ReaderUser)
	if err := writeFiles(map[string][]byte{c.tokenFile: []byte(csv)}); err != nil {
		return nil, err
	}
	return c, nil
}

const tokenBytes = 24

func randomToken() string {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

func writeFiles(files map[string][]byte) error {
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
