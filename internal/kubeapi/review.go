package kubeapi

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"sort"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/request"
)

// kubectl auth can-i asks the server what the caller may do (a SelfSubjectAccessReview;
// with --list a SelfSubjectRulesReview). fleetcache answers from what it serves: get,
// list and watch of the cached resources the caller's scope sees, and never anything
// else. These two POSTs are the only ones the read-only API takes: they create nothing.

const (
	accessReviewPath = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
	rulesReviewPath  = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
)

var readVerbSet = []string{"get", "list", "watch"}

// review answers a SelfSubjectAccessReview or SelfSubjectRulesReview posted to path.
func (h *Handler) review(w http.ResponseWriter, r *http.Request, cluster, path string) {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		ct = mediaJSON
	}
	s, ok := serializers(ct)
	if !ok {
		writeStatus(w, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
			Reason: metav1.StatusReasonUnsupportedMediaType, Message: "cannot read a review in " + ct}})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	obj, gvk, err := s.Serializer.Decode(body, nil, nil)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest("cannot decode the review: "+err.Error()))
		return
	}
	switch review := obj.(type) {
	case *authorizationv1.SelfSubjectAccessReview:
		if path != accessReviewPath {
			break
		}
		review.Status.Allowed, review.Status.Reason = h.allowed(r, cluster, review.Spec)
		review.Status.Denied = !review.Status.Allowed
		writeReview(w, review)
		return
	case *authorizationv1.SelfSubjectRulesReview:
		if path != rulesReviewPath {
			break
		}
		review.Status = h.rules(r, cluster, review.Spec.Namespace)
		writeReview(w, review)
		return
	}
	writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("%s takes a review of its own kind, not a %s", path, gvk.Kind)))
}

// allowed decides one access review and says why.
func (h *Handler) allowed(r *http.Request, cluster string, spec authorizationv1.SelfSubjectAccessReviewSpec) (bool, string) {
	if nr := spec.NonResourceAttributes; nr != nil {
		if nr.Verb == "get" {
			return true, "fleetcache: discovery, version and schemas are readable"
		}
		return false, "fleetcache serves a read-only cache: only get"
	}
	ra := spec.ResourceAttributes
	if ra == nil {
		return false, "no resourceAttributes or nonResourceAttributes"
	}
	if !slices.Contains(readVerbSet, ra.Verb) {
		return false, "fleetcache serves a read-only cache: only get, list and watch"
	}
	if ra.Subresource != "" {
		return false, "fleetcache caches no subresources"
	}
	name := ra.Resource
	if ra.Group != "" {
		name += "." + ra.Group
	}
	info, ok := h.Index.Resource(name)
	if !ok || !h.Pipeline.Visible(info) || group(info) != ra.Group {
		return false, fmt.Sprintf("fleetcache does not serve %s", name)
	}
	if !h.served(cluster, info) {
		return false, fmt.Sprintf("cluster %s does not serve %s", cluster, name)
	}
	if sc := request.Scope(r); sc != nil {
		switch {
		case !info.Namespaced && !h.seesNamespace(sc, cluster, ""):
			return false, fmt.Sprintf("%s are cluster-scoped, outside your namespaces", name)
		case ra.Namespace != "" && !h.seesNamespace(sc, cluster, ra.Namespace):
			return false, fmt.Sprintf("namespace %s is outside your scope", ra.Namespace)
		}
	}
	return true, "fleetcache: get, list and watch of cached resources"
}

// seesNamespace asks the scope about a namespace of the cluster or, on the fleet path
// (cluster ""), of any cluster the caller sees: what a list there would show.
func (h *Handler) seesNamespace(sc aggregator.Scope, cluster, ns string) bool {
	if cluster != "" {
		return sc.SeesNamespace(cluster, ns)
	}
	for _, c := range h.Fleet.Names() {
		if sc.SeesCluster(c) && sc.SeesNamespace(c, ns) {
			return true
		}
	}
	return false
}

// rules lists what the caller may do in namespace: one rule of the read verbs over the
// served resources.
func (h *Handler) rules(r *http.Request, cluster, namespace string) authorizationv1.SubjectRulesReviewStatus {
	st := authorizationv1.SubjectRulesReviewStatus{
		NonResourceRules: []authorizationv1.NonResourceRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/api", "/api/*", "/apis", "/apis/*", "/openapi/*", "/version"}}},
	}
	if sc := request.Scope(r); sc != nil && namespace != "" && !h.seesNamespace(sc, cluster, namespace) {
		return st
	}
	byGroup := map[string][]string{}
	for _, info := range h.Index.Resources() {
		if h.Pipeline.Visible(info) && h.served(cluster, info) {
			byGroup[group(info)] = append(byGroup[group(info)], plural(info))
		}
	}
	groups := make([]string, 0, len(byGroup))
	for g := range byGroup {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		sort.Strings(byGroup[g])
		st.ResourceRules = append(st.ResourceRules, authorizationv1.ResourceRule{Verbs: readVerbSet, APIGroups: []string{g}, Resources: byGroup[g]})
	}
	return st
}

// writeReview answers a review as kube-apiserver does: 201 with the review and its status.
func writeReview(w http.ResponseWriter, review runtime.Object) {
	if gvks, _, err := scheme.Scheme.ObjectKinds(review); err == nil {
		review.GetObjectKind().SetGroupVersionKind(gvks[0]) // the decoder may have dropped it
	}
	w.Header().Set("Content-Type", mediaJSON)
	w.WriteHeader(http.StatusCreated)
	s, _ := serializers(mediaJSON)
	_ = s.Serializer.Encode(review, w)
}

// group is a resource's API group ("" for the core group).
func group(info aggregator.ResourceInfo) string {
	gv, _ := schema.ParseGroupVersion(info.APIVersion)
	return gv.Group
}
