package sharding

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// testKey is the group key of the tests' replicas; otherKey another group's.
var testKey, otherKey = mustKey("0123456789abcdef0123456789abcdef"), mustKey("fedcba9876543210fedcba9876543210")

func mustKey(s string) *GroupKey {
	k, err := NewGroupKey([]byte(s))
	if err != nil {
		panic(err)
	}
	return k
}

func TestGroupKeySignsAndVerifies(t *testing.T) {
	msg := []byte("fleetcache-test\x00m")
	sig := testKey.Sign(msg)
	if !testKey.Verify(msg, sig) {
		t.Error("a signature does not verify under its own key")
	}
	if otherKey.Verify(msg, sig) || testKey.Verify([]byte("fleetcache-test\x00n"), sig) || testKey.Verify(msg, sig[:16]) {
		t.Error("a signature verifies under another key, for another message, or cut short")
	}
	if bytes.Equal(testKey.Derive("positions"), otherKey.Derive("positions")) || bytes.Equal(testKey.Derive("positions"), testKey.Derive("other")) {
		t.Error("derived keys must differ between keys and between purposes")
	}
	if _, err := NewGroupKey(make([]byte, MinGroupKeyBytes-1)); err == nil {
		t.Error("a key shorter than 32 bytes was taken")
	}
}

// The first replica creates the Secret; the others, also one that lost the race to create
// it, read the same key.
func TestGroupKeySecretIsCreatedOnceAndShared(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	k1, err := EnsureGroupKeySecret(ctx, client, "ns", "g")
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.CoreV1().Secrets("ns").Get(ctx, "g-group-key", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Data[GroupKeyData]) != MinGroupKeyBytes || s.Immutable == nil || !*s.Immutable || s.Labels[GroupLabel] != "g" {
		t.Errorf("the Secret: %+v", s)
	}
	k2, err := EnsureGroupKeySecret(ctx, client, "ns", "g")
	if err != nil || !bytes.Equal(k1.key, k2.key) {
		t.Fatalf("a second replica reads another key (%v)", err)
	}
	// A replica that saw no Secret, then lost the race to create it.
	racing := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "g-group-key", Namespace: "ns"}, Data: map[string][]byte{GroupKeyData: k1.key}})
	missed := false
	racing.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !missed {
			missed = true
			return true, nil, apierrors.NewNotFound(corev1.Resource("secrets"), "g-group-key")
		}
		return false, nil, nil
	})
	k3, err := EnsureGroupKeySecret(ctx, racing, "ns", "g")
	if err != nil || !bytes.Equal(k1.key, k3.key) {
		t.Fatalf("the loser of the race: %v", err)
	}
	// A Secret holding too short a key is an error naming it, not a weaker key.
	short := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "g-group-key", Namespace: "ns"}, Data: map[string][]byte{GroupKeyData: []byte("short")}})
	if _, err := EnsureGroupKeySecret(ctx, short, "ns", "g"); err == nil || !strings.Contains(err.Error(), "ns/g-group-key") {
		t.Errorf("a short key: %v", err)
	}
	if _, err := EnsureGroupKeySecret(ctx, client, "ns", "Not_A_Name"); err == nil || !strings.Contains(err.Error(), "groupKeyFile") {
		t.Errorf("a group that cannot name a Secret: %v", err)
	}
}

func TestGroupKeyFile(t *testing.T) {
	dir := t.TempDir()
	good, short := filepath.Join(dir, "good"), filepath.Join(dir, "short")
	_ = os.WriteFile(good, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	_ = os.WriteFile(short, []byte("0123456789\n"), 0o600)
	k, err := LoadGroupKey(context.Background(), good, nil, "", "", 0, nil)
	if err != nil || string(k.key) != "0123456789abcdef0123456789abcdef\n" {
		t.Errorf("the file's bytes, as they are: %q, %v", k.key, err)
	}
	for _, f := range []string{short, filepath.Join(dir, "missing")} {
		if _, err := ReadGroupKeyFile(f); err == nil || !strings.Contains(err.Error(), "sharding.groupKeyFile") {
			t.Errorf("%s: %v", f, err)
		}
	}
}
