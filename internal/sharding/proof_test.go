package sharding

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// lease is a Lease of group g as a replica writes it; proof "" leaves the annotation out.
func lease(name, holder, address, proof string, renew time.Time) *coordinationv1.Lease {
	secs := int32(3600)
	rt := metav1.NewMicroTime(renew)
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{GroupLabel: "g"}, Annotations: map[string]string{AddressAnnotation: address}},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &rt},
	}
	if proof != "" {
		l.Annotations[ProofAnnotation] = proof
	}
	return l
}

// A Lease counts only with a proof of the group key over its own group, name, holder and
// address; every other one is refused, reported in Status and the stats, and logged once
// per change of what it claims, not at every renewal.
func TestOnlyLeasesProvingTheKeyAreMembers(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	m, err := New(Options{Client: fake.NewClientset(), Namespace: "ns", Group: "g", Identity: "a", Address: "http://a", Key: testKey, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	m.synced, m.lastRenewed = true, time.Now()
	now := time.Now()
	proofB := leaseProof(testKey, "g", "g-b", "b", "http://b")
	for _, l := range []*coordinationv1.Lease{
		lease("g-b", "b", "http://b", proofB, now),
		lease("g-none", "evil", "http://evil", "", now),
		lease("g-notbase64", "evil2", "http://evil", "!!", now),
		lease("g-moved", "b2", "http://evil", leaseProof(testKey, "g", "g-moved", "b2", "http://b2"), now),
		lease("g-otherkey", "c", "http://c", leaseProof(otherKey, "g", "g-otherkey", "c", "http://c"), now),
		lease("g-copied", "b", "http://evil", proofB, now),
	} {
		m.observe(l)
	}
	m.evaluate()
	if got := identities(m.Members()); got != "[a b]" {
		t.Errorf("members %s, want [a b]", got)
	}
	refused := map[string]string{}
	for _, r := range m.Refused() {
		refused[r.Lease] = r.Reason
	}
	for name, why := range map[string]string{
		"g-none": "no " + ProofAnnotation, "g-notbase64": "not base64", "g-moved": "does not match",
		"g-otherkey": "does not match", "g-copied": "does not match",
	} {
		if !strings.Contains(refused[name], why) {
			t.Errorf("%s: refused %q, want a reason saying %q", name, refused[name], why)
		}
	}
	if len(refused) != 5 || m.Stats().Refused != 5 {
		t.Errorf("refused %v, stats %+v; want the 5 Leases without a valid proof", refused, m.Stats())
	}
	src := &Source{Inner: staticSource(names("ctx", 40)), Owner: m}
	if _, err := src.Targets(); err != nil {
		t.Fatal(err)
	}
	if st := src.Status(); len(st.Refused) != 5 || len(st.Members) != 2 {
		t.Errorf("Status: %d members, %d refused", len(st.Members), len(st.Refused))
	}
	for c, owners := range src.Assignment() {
		for _, o := range owners {
			if o.Identity != "a" && o.Identity != "b" || o.Address == "http://evil" {
				t.Errorf("%s is assigned to %+v", c, o)
			}
		}
	}
	warnings := func() int {
		return logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("does not prove the group key").Len()
	}
	if n := warnings(); n != 5 {
		t.Errorf("%d warnings for 5 refused Leases", n)
	}
	// Renewals of a refused Lease are not news; a new claim is.
	for i := range 3 {
		m.observe(lease("g-none", "evil", "http://evil", "", now.Add(time.Duration(i+1)*time.Second)))
		m.evaluate()
	}
	if n := warnings(); n != 5 {
		t.Errorf("renewals of a refused Lease logged again: %d warnings", n)
	}
	m.observe(lease("g-none", "evil", "http://evil-2", "", now))
	if n := warnings(); n != 6 {
		t.Errorf("a refused Lease claiming another address: %d warnings, want 6", n)
	}
	// The same Lease proved: a member.
	m.observe(lease("g-none", "evil", "http://evil-2", leaseProof(testKey, "g", "g-none", "evil", "http://evil-2"), now))
	m.evaluate()
	if got := identities(m.Members()); got != "[a b evil]" || len(m.Refused()) != 4 {
		t.Errorf("a proved Lease: members %s, %d refused", got, len(m.Refused()))
	}
}
