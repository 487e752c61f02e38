package sharding

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

var fleet *testfleet.Fleet

func TestMain(m *testing.M) { testfleet.Main(m, testfleet.Options{Clusters: 1}, &fleet) }

type replica struct {
	*Membership
	cancel context.CancelFunc
	done   chan struct{}
}

// join starts a member of group in the home cluster's default namespace.
func join(t *testing.T, group, id string, lease time.Duration) *replica {
	t.Helper()
	if fleet == nil {
		t.Skip("needs the real fleet (not started with -short)")
	}
	client, err := kubernetes.NewForConfig(fleet.Clusters[0].AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Client: client, Namespace: "default", Group: group, Identity: id, Address: "http://" + id + ":8080", LeaseDuration: lease, Key: testKey, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{Membership: m, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); _ = m.Run(ctx) }()
	t.Cleanup(func() { r.cancel(); <-r.done })
	return r
}

func identities(ms []Member) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Identity)
	}
	return fmt.Sprint(out)
}

func TestMembersSeeEachOtherAndAgree(t *testing.T) {
	rs := []*replica{join(t, "agree", "r0", 10*time.Second), join(t, "agree", "r1", 10*time.Second), join(t, "agree", "r2", 10*time.Second)}
	other := join(t, "another-group", "x0", 10*time.Second)
	for _, r := range rs {
		testfleet.Eventually(t, 15*time.Second, r.Identity()+" sees three members", func() (bool, string) {
			return r.Joined() && identities(r.Members()) == "[r0 r1 r2]", identities(r.Members())
		})
	}
	// Once x0 has joined and sees itself, it has read every Lease of its group: the other
	// group's three are there to be seen, and must not be.
	testfleet.Eventually(t, 15*time.Second, "x0 joined and sees itself", func() (bool, string) {
		return other.Joined() && strings.Contains(identities(other.Members()), "x0"), identities(other.Members())
	})
	if got := identities(other.Members()); got != "[x0]" {
		t.Errorf("a replica of another group sees %s", got)
	}
	// Every replica computes the same owner for every cluster, and exactly one owns it.
	for _, c := range names("ctx", 60) {
		owners := 0
		for _, r := range rs {
			if r.Owns(c) {
				owners++
			}
			if a, b := identities(r.Owners(c)), identities(rs[0].Owners(c)); a != b {
				t.Errorf("%s: %s says owners %s, r0 says %s", c, r.Identity(), a, b)
			}
		}
		if owners != 1 {
			t.Errorf("%s is owned by %d replicas, want 1", c, owners)
		}
	}
	if rs[0].Members()[1].Address != "http://r1:8080" {
		t.Errorf("r1's address: %+v", rs[0].Members()[1])
	}
}

func TestALeavingReplicaIsDroppedAtOnce(t *testing.T) {
	// A long lease: only the deleted Lease can explain a quick drop.
	a, b := join(t, "leave", "a", time.Minute), join(t, "leave", "b", time.Minute)
	testfleet.Eventually(t, 15*time.Second, "two members", func() (bool, string) {
		return identities(a.Members()) == "[a b]", identities(a.Members())
	})
	b.cancel()
	<-b.done
	testfleet.Eventually(t, 10*time.Second, "b gone after it left", func() (bool, string) {
		return identities(a.Members()) == "[a]", identities(a.Members())
	})
	if _, err := a.opts.Client.CoordinationV1().Leases("default").Get(context.Background(), "leave-b", metav1.GetOptions{}); err == nil {
		t.Errorf("b's Lease is still there after it left")
	}
}

func TestAKilledReplicaExpires(t *testing.T) {
	const lease = 3 * time.Second
	a, b := join(t, "kill", "a", lease), join(t, "kill", "b", lease)
	testfleet.Eventually(t, 15*time.Second, "two members", func() (bool, string) {
		return identities(a.Members()) == "[a b]", identities(a.Members())
	})
	b.vanish = true // its Lease stays behind, no longer renewed
	b.cancel()
	<-b.done
	killed := time.Now()
	// Until the Lease expires b is still a member (a cannot tell a kill from a slow
	// renewal); after it, b is gone.
	if got := identities(a.Members()); got != "[a b]" {
		t.Errorf("right after the kill a sees %s, want b still there until its lease expires", got)
	}
	testfleet.Eventually(t, lease+5*time.Second, "b dropped after its lease expired", func() (bool, string) {
		return identities(a.Members()) == "[a]", identities(a.Members())
	})
	if since := time.Since(killed); since < lease-time.Second {
		t.Errorf("b dropped %s after it stopped renewing, before its %s lease could expire", since, lease)
	}
	// b comes back under the same identity: it takes its Lease over.
	b2 := join(t, "kill", "b", lease)
	testfleet.Eventually(t, 15*time.Second, "b back", func() (bool, string) {
		return identities(a.Members()) == "[a b]" && b2.Joined(), identities(a.Members())
	})
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Namespace: "ns", Identity: "a", Address: "x"}, "no client"},
		{Options{Client: &kubernetes.Clientset{}, Identity: "a", Address: "x"}, "namespace"},
		{Options{Client: &kubernetes.Clientset{}, Namespace: "ns", Identity: "A_b", Address: "x"}, `identity "A_b"`},
		{Options{Client: &kubernetes.Clientset{}, Namespace: "ns", Identity: "a"}, "address"},
		{Options{Client: &kubernetes.Clientset{}, Namespace: "ns", Identity: "a", Address: "x"}, "no group key"},
		{Options{Client: &kubernetes.Clientset{}, Namespace: "ns", Identity: "a", Address: "x", Key: testKey, LeaseDuration: time.Second, RenewInterval: 2 * time.Second}, "renewInterval"},
		{Options{Client: &kubernetes.Clientset{}, Namespace: "ns", Identity: "a", Address: "x", Key: testKey, Replicas: -1}, "replicas"},
	} {
		_, err := New(tc.opts)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error about %s", tc.opts, err, tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
