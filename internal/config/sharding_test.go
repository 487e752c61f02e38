package config

import (
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func kubeconfigFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestShardedOverlayConfigInAPod(t *testing.T) {
	c, err := Load("../../deploy/overlays/sharded/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "fleetcache-1")
	t.Setenv("POD_IP", "10.1.2.3")
	c.Kubeconfig = []string{kubeconfigFile(t)}
	c.Auth.TokenFile = c.Kubeconfig[0] // exists; its content is not read here
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s := c.Sharding
	if !s.Enabled() || s.Identity != "fleetcache-1" || s.AdvertiseURL != "http://10.1.2.3:8080" || s.Replicas != 2 || s.Namespace != "fleetcache" || s.LeaseDuration.Duration.Seconds() != 15 {
		t.Errorf("sharding read wrongly: %+v", s)
	}
}

func TestShardingOffByDefault(t *testing.T) {
	c := &Config{Kubeconfig: []string{kubeconfigFile(t)}}
	c.SetDefaults()
	if c.Sharding.Enabled() || c.Sharding.Identity != "" {
		t.Errorf("sharding on without a home: %+v", c.Sharding)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestShardingErrorsNameTheField(t *testing.T) {
	raw := `
listen: 0.0.0.0:8080
auth: {insecureAllowUnauthenticated: true}
sharding:
  homeContext: home
  identity: Not_DNS
  leaseDuration: 1s
  replicas: -1
`
	c, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	c.Kubeconfig = []string{kubeconfigFile(t)}
	t.Setenv("POD_IP", "")
	c.SetDefaults()
	err = c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"sharding.namespace", "sharding.identity", "sharding.advertiseURL", "sharding.leaseDuration", "sharding.replicas"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestShardingKeyAndCAFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, short := write("key", strings.Repeat("k", 32)), write("short", "k")
	notPEM := write("ca.txt", "not a certificate")
	srv := httptest.NewTLSServer(nil) // for a real certificate
	srv.Close()
	ca := write("ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	badCert := write("bad.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	base := func() *Config {
		c := &Config{Kubeconfig: []string{kubeconfigFile(t)}, Sharding: ShardingConfig{HomeContext: "home", Namespace: "ns", Identity: "r0", AdvertiseURL: "https://r0:8443"}}
		c.SetDefaults()
		return c
	}
	for _, tc := range []struct {
		name string
		edit func(*ShardingConfig)
		want string // "" for valid
	}{
		{"defaults: the Secret", func(*ShardingConfig) {}, ""},
		{"a key file", func(s *ShardingConfig) { s.GroupKeyFile = key }, ""},
		{"a short key file", func(s *ShardingConfig) { s.GroupKeyFile = short }, "sharding.groupKeyFile: Invalid value: \"" + short + "\": holds 1 bytes"},
		{"a missing key file", func(s *ShardingConfig) { s.GroupKeyFile = filepath.Join(dir, "nope") }, "sharding.groupKeyFile"},
		{"a group that cannot name the Secret", func(s *ShardingConfig) { s.Group = "Team_A" }, "sharding.group: Invalid value: \"Team_A\""},
		{"... unless the key is a file", func(s *ShardingConfig) { s.Group, s.GroupKeyFile = "Team_A", key }, ""},
		{"a CA file", func(s *ShardingConfig) { s.PeerCAFile = ca }, ""},
		{"a CA file that is no PEM", func(s *ShardingConfig) { s.PeerCAFile = notPEM }, "sharding.peerCAFile: Invalid value: \"" + notPEM + "\": no PEM certificate"},
		{"a CA file with a broken certificate", func(s *ShardingConfig) { s.PeerCAFile = badCert }, "sharding.peerCAFile: Invalid value: \"" + badCert + "\": certificate 1"},
		{"a missing CA file", func(s *ShardingConfig) { s.PeerCAFile = filepath.Join(dir, "nope.pem") }, "sharding.peerCAFile"},
	} {
		c := base()
		tc.edit(&c.Sharding)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
