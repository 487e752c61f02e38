package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ShardingConfig spreads the fleet over several replicas that find each other through
// Leases in a home cluster (see internal/sharding). Off unless homeContext is set.
type ShardingConfig struct {
	// HomeContext is the kubeconfig context of the cluster holding the replicas' Leases,
	// or "in-cluster" for the cluster fleetcache runs in. Empty: one process caches
	// everything (the default).
	HomeContext string `json:"homeContext,omitempty"`
	// HomeKubeconfig is the kubeconfig file of HomeContext. Default: the kubeconfig files
	// above.
	HomeKubeconfig string `json:"homeKubeconfig,omitempty"`
	// Namespace of the Leases. Required with sharding.
	Namespace string `json:"namespace,omitempty"`
	// Group is the Leases' label value: the replicas that share one fleet. Default
	// "fleetcache".
	Group string `json:"group,omitempty"`
	// Identity names this replica and its Lease, stable across restarts. Default: $POD_NAME,
	// else the host name.
	Identity string `json:"identity,omitempty"`
	// AdvertiseURL is the base URL the other replicas reach this one on. Default:
	// http://<listen> when listen names a host, else http://$POD_IP:<port> in a pod.
	AdvertiseURL string `json:"advertiseURL,omitempty"`
	// LeaseDuration is how long a replica that stopped renewing (killed) still owns its
	// clusters. Default 15s.
	LeaseDuration metav1.Duration `json:"leaseDuration,omitempty"`
	// Replicas is how many replicas cache each cluster: 2 means a lost replica costs no
	// cold relist and no partial answer. Default 1.
	Replicas int `json:"replicas,omitempty"`
	// GroupKeyFile holds the key the replicas of the group share (at least 32 bytes, used
	// as they are): a replica proves its Lease with it and signs the caller's identity
	// for its peers with it. Default: the Secret <group>-group-key in Namespace, which
	// the first replica creates.
	GroupKeyFile string `json:"groupKeyFile,omitempty"`
	// PeerCAFile is a PEM bundle of the CA(s) that sign the replicas' serving
	// certificates (tls.certFile): a replica trusts them, besides the system's roots,
	// when it calls its peers over https.
	PeerCAFile string `json:"peerCAFile,omitempty"`
}

// minGroupKeyBytes is internal/sharding's MinGroupKeyBytes (not imported: the
// configuration does not depend on what it configures).
const minGroupKeyBytes = 32

// Enabled reports whether sharding is configured.
func (s ShardingConfig) Enabled() bool { return s.HomeContext != "" }

func (c *Config) setShardingDefaults() {
	s := &c.Sharding
	if !s.Enabled() {
		return
	}
	if s.Identity == "" {
		s.Identity = os.Getenv("POD_NAME")
	}
	if s.Identity == "" {
		s.Identity, _ = os.Hostname()
	}
	if s.AdvertiseURL == "" {
		scheme := "http://"
		if c.TLS.CertFile != "" {
			scheme = "https://"
		}
		host, port, err := net.SplitHostPort(c.Listen)
		switch {
		case err != nil:
		case host != "" && !net.ParseIP(host).IsUnspecified():
			s.AdvertiseURL = scheme + c.Listen
		case os.Getenv("POD_IP") != "":
			// In a pod listening on all addresses: the pod's own IP (the downward API).
			s.AdvertiseURL = scheme + net.JoinHostPort(os.Getenv("POD_IP"), port)
		}
	}
	if s.LeaseDuration.Duration == 0 {
		s.LeaseDuration.Duration = 15 * time.Second
	}
	if s.Replicas == 0 {
		s.Replicas = 1
	}
}

func (c *Config) validateSharding() field.ErrorList {
	s := c.Sharding
	if !s.Enabled() {
		return nil
	}
	var errs field.ErrorList
	p := field.NewPath("sharding")
	if s.Namespace == "" {
		errs = append(errs, field.Required(p.Child("namespace"), "the namespace of the replicas' Leases in the home cluster"))
	}
	if msgs := validation.IsDNS1123Subdomain(s.Identity); len(msgs) > 0 {
		errs = append(errs, field.Invalid(p.Child("identity"), s.Identity, fmt.Sprint(msgs)))
	}
	if u, err := url.Parse(s.AdvertiseURL); s.AdvertiseURL == "" || err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		errs = append(errs, field.Invalid(p.Child("advertiseURL"), s.AdvertiseURL, "an http(s) URL the other replicas reach this one on is required when listen does not name a host (e.g. http://$(POD_IP):8080)"))
	}
	if s.LeaseDuration.Duration < 3*time.Second {
		errs = append(errs, field.Invalid(p.Child("leaseDuration"), s.LeaseDuration.Duration.String(), "must be at least 3s (renewed every third of it)"))
	}
	if s.Replicas < 1 {
		errs = append(errs, field.Invalid(p.Child("replicas"), s.Replicas, "must be at least 1"))
	}
	if s.GroupKeyFile != "" {
		if b, err := os.ReadFile(s.GroupKeyFile); err != nil {
			errs = append(errs, field.Invalid(p.Child("groupKeyFile"), s.GroupKeyFile, "cannot read: "+err.Error()))
		} else if len(b) < minGroupKeyBytes {
			errs = append(errs, field.Invalid(p.Child("groupKeyFile"), s.GroupKeyFile, fmt.Sprintf("holds %d bytes; the group key must have at least %d (e.g. head -c 32 /dev/urandom)", len(b), minGroupKeyBytes)))
		}
	} else if msgs := validation.IsDNS1123Subdomain(s.groupName() + "-group-key"); len(msgs) > 0 {
		errs = append(errs, field.Invalid(p.Child("group"), s.Group, fmt.Sprintf("the group key Secret would be named %q, which is not a valid object name (%s): name the group in lowercase, or give sharding.groupKeyFile", s.groupName()+"-group-key", msgs[0])))
	}
	if s.PeerCAFile != "" {
		if err := checkCAFile(s.PeerCAFile); err != nil {
			errs = append(errs, field.Invalid(p.Child("peerCAFile"), s.PeerCAFile, err.Error()))
		}
	}
	return errs
}

func (s ShardingConfig) groupName() string {
	if s.Group == "" {
		return "fleetcache" // sharding.DefaultGroup
	}
	return s.Group
}

// checkCAFile reports why a file is not a PEM bundle of certificates.
func checkCAFile(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read: %w", err)
	}
	n := 0
	for rest := raw; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
	}
	return nil
}

// HomeConfig is the REST config of the sharding home cluster.
func (c *Config) HomeConfig() (*rest.Config, error) {
	s := c.Sharding
	if s.HomeContext == "in-cluster" {
		return rest.InClusterConfig()
	}
	rules := &clientcmd.ClientConfigLoadingRules{Precedence: c.Kubeconfig}
	if s.HomeKubeconfig != "" {
		rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: s.HomeKubeconfig}
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: s.HomeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("sharding.homeContext %q: %w", s.HomeContext, err)
	}
	return cfg, nil
}
