package sharding

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// A Lease is something anyone allowed to write Leases in the namespace can write, and an
// address is something anyone can listen on. What makes a replica a member of its group is
// holding the group's key: it proves its Lease with it (membership.go) and signs, for its
// peers, who a routed request is for (peer.go). Nothing else is trusted.

// MinGroupKeyBytes is the shortest group key accepted: HMAC-SHA256's block of entropy.
const MinGroupKeyBytes = 32

// GroupKeyData is the key of the group key Secret's data that holds the key.
const GroupKeyData = "key"

// GroupKey is the secret shared by the replicas of one group. Its zero value is unusable;
// make one with NewGroupKey.
type GroupKey struct {
	key []byte
}

// NewGroupKey uses b (at least MinGroupKeyBytes, taken as they are) as the group key.
func NewGroupKey(b []byte) (*GroupKey, error) {
	if len(b) < MinGroupKeyBytes {
		return nil, fmt.Errorf("group key: %d bytes, want at least %d", len(b), MinGroupKeyBytes)
	}
	return &GroupKey{key: append([]byte(nil), b...)}, nil
}

// Sign returns the HMAC-SHA256 of msg under the key. Callers put a purpose of their own
// in front of msg ("fleetcache-lease\x00", "fleetcache-peer\x00"), so that a signature
// made for one purpose never passes for another.
func (k *GroupKey) Sign(msg []byte) []byte {
	mac := hmac.New(sha256.New, k.key)
	mac.Write(msg)
	return mac.Sum(nil)
}

// Verify reports whether sig is Sign(msg), in constant time.
func (k *GroupKey) Verify(msg, sig []byte) bool {
	return hmac.Equal(sig, k.Sign(msg))
}

// Derive returns a key of its own for purpose, from the group key: what the replicas of a
// group must agree on without using the group key itself (the key continue tokens are
// signed with, so that a page begun on one replica continues on any other).
func (k *GroupKey) Derive(purpose string) []byte {
	return k.Sign([]byte("fleetcache-derive\x00" + purpose))
}

// ReadGroupKeyFile reads a group key from a file (sharding.groupKeyFile): its bytes as
// they are, so that every replica reading the same file, or the same Secret through the
// API, has the same key.
func ReadGroupKeyFile(path string) (*GroupKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sharding.groupKeyFile: %w", err)
	}
	k, err := NewGroupKey(b)
	if err != nil {
		return nil, fmt.Errorf("sharding.groupKeyFile %s: %w", path, err)
	}
	return k, nil
}

// GroupKeySecretName is the Secret the replicas of group keep their key in, next to their
// Leases.
func GroupKeySecretName(group string) string { return group + "-group-key" }

// ValidGroupKeySecretName reports why group cannot name a Secret ("" when it can): a
// group is a label value, which allows characters a Secret's name does not.
func ValidGroupKeySecretName(group string) string {
	if msgs := validation.IsDNS1123Subdomain(GroupKeySecretName(group)); len(msgs) > 0 {
		return fmt.Sprintf("the group key Secret's name %q is not a valid object name (%s)", GroupKeySecretName(group), msgs[0])
	}
	return ""
}

// EnsureGroupKeySecret returns the group's key from its Secret in namespace, creating the
// Secret with a random key when it does not exist yet (the first replica of the group
// does). Replicas starting together race to create it: the loser reads the winner's.
func EnsureGroupKeySecret(ctx context.Context, client kubernetes.Interface, namespace, group string) (*GroupKey, error) {
	if why := ValidGroupKeySecretName(group); why != "" {
		return nil, fmt.Errorf("sharding group %q: %s; name the group in lowercase or give sharding.groupKeyFile", group, why)
	}
	name := GroupKeySecretName(group)
	secrets := client.CoreV1().Secrets(namespace)
	ref := namespace + "/" + name
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		b := make([]byte, MinGroupKeyBytes)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("group key: %w", err)
		}
		immutable := true
		s, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{GroupLabel: group},
				Annotations: map[string]string{"fleetcache.io/description": "The key the fleetcache replicas of group " + group + " prove their Leases and sign their requests to each other with. Delete it and restart every replica to rotate it."}},
			Type: corev1.SecretTypeOpaque,
			// Rotation is delete and restart: an update would split a running group.
			Immutable: &immutable,
			Data:      map[string][]byte{GroupKeyData: b},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			s, err = secrets.Get(ctx, name, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("group key Secret %s: %w", ref, err)
	}
	k, err := NewGroupKey(s.Data[GroupKeyData])
	if err != nil {
		return nil, fmt.Errorf("group key Secret %s, data %q: %w", ref, GroupKeyData, err)
	}
	return k, nil
}

// LoadGroupKey is the group key from file when it is set, else from the group's Secret
// (EnsureGroupKeySecret), asked again every retry until ctx ends: the home cluster may be
// briefly unreachable at start, or the RBAC for the Secret applied after the pods.
func LoadGroupKey(ctx context.Context, file string, client kubernetes.Interface, namespace, group string, retry time.Duration, onRetry func(error)) (*GroupKey, error) {
	if file != "" {
		return ReadGroupKeyFile(file)
	}
	if why := ValidGroupKeySecretName(group); why != "" {
		return nil, fmt.Errorf("sharding group %q: %s; name the group in lowercase or give sharding.groupKeyFile", group, why)
	}
	for {
		k, err := EnsureGroupKeySecret(ctx, client, namespace, group)
		if err == nil {
			return k, nil
		}
		if onRetry != nil {
			onRetry(err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-time.After(retry):
		}
	}
}
