package kubeapi

import (
	"net/http"
	"strings"

	"github.com/munnerz/goautoneg"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/fleetcache/fleetcache/aggregator"
)

// Media types this API speaks, as client-go names them.
const (
	mediaJSON     = runtime.ContentTypeJSON
	mediaProtobuf = runtime.ContentTypeProtobuf
)

// serializers returns apimachinery's serializer for a media type: JSON for every
// resource, protobuf for the built-in ones (client-go's scheme knows their types; custom
// resources have no protobuf form, as with kube-apiserver).
func serializers(mediaType string) (runtime.SerializerInfo, bool) {
	return runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), mediaType)
}

// typed reports whether a resource's objects are built-in types client-go's scheme can
// encode as protobuf.
func typed(info aggregator.ResourceInfo) bool {
	gv, err := schema.ParseGroupVersion(info.APIVersion)
	if err != nil {
		return false
	}
	return scheme.Scheme.Recognizes(gv.WithKind(info.Kind)) && scheme.Scheme.Recognizes(gv.WithKind(info.Kind+"List"))
}

// negotiate picks the serializer for an object, list or watch answer from the Accept
// header, in the client's order of preference: protobuf where the client asks for it
// first and the resource has it (client-go's typed clients send
// "application/vnd.kubernetes.protobuf,application/json"), JSON otherwise. Tables are
// chosen earlier (wantsTable); a clause asking for another conversion (as=...) is
// skipped, as kube-apiserver skips what it cannot serve.
func negotiate(r *http.Request, info aggregator.ResourceInfo) runtime.SerializerInfo {
	for _, a := range goautoneg.ParseAccept(r.Header.Get("Accept")) {
		if a.Params["as"] != "" {
			continue
		}
		if a.Type+"/"+a.SubType == mediaProtobuf && typed(info) {
			if s, ok := serializers(mediaProtobuf); ok {
				return s
			}
		}
		if a.Type+"/"+a.SubType == mediaJSON || a.Type == "*" || a.Type == "application" && a.SubType == "*" {
			break
		}
	}
	s, _ := serializers(mediaJSON)
	return s
}

func isProtobuf(s runtime.SerializerInfo) bool { return s.MediaType == mediaProtobuf }

// AcceptsJSON reports whether a client takes JSON (a Table is JSON too): no Accept, or
// one that names application/json, application/* or */*.
func AcceptsJSON(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	if accept == "" {
		return true
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		switch mt {
		case mediaJSON, "*/*", "application/*":
			return true
		}
	}
	return false
}

// writeObject encodes one object (or list) with s.
func writeObject(w http.ResponseWriter, s runtime.SerializerInfo, obj runtime.Object) {
	w.Header().Set("Content-Type", s.MediaType)
	w.Header().Add("Vary", "Accept")
	if err := s.Serializer.Encode(obj, w); err != nil {
		// Nothing may have been written yet (the encoders build the whole message first).
		writeStatus(w, apierrors.NewInternalError(err))
	}
}

// writeTypedList writes a list of built-in objects through apimachinery's serializer
// (protobuf): the typed list of the resource's kind, holding the tagged objects.
func writeTypedList(w http.ResponseWriter, s runtime.SerializerInfo, info aggregator.ResourceInfo, lm metav1.ListMeta, objs []runtime.Object) {
	gvk := schema.FromAPIVersionAndKind(info.APIVersion, info.Kind+"List")
	list, err := scheme.Scheme.New(gvk)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	if err := meta.SetList(list, objs); err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	la, err := meta.ListAccessor(list)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	la.SetResourceVersion(lm.ResourceVersion)
	la.SetContinue(lm.Continue)
	list.GetObjectKind().SetGroupVersionKind(gvk)
	writeObject(w, s, list)
}
