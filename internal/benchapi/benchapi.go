// Package benchapi is a minimal stand-in for kube-apiserver that serves pods from
// pre-encoded protobuf frames, for benchmarks that must measure the client side only:
// decoding, informers, transforms and indexes, not etcd or the apiserver.
//
// It serves discovery for pods, a LIST with the initial pods, and a WATCH that sends the
// initial pods (for watch-list clients) and then the live events, then stays open.
package benchapi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// Server is a running fake apiserver.
type Server struct {
	*httptest.Server
	list    []byte // protobuf PodList
	initial [][]byte
	live    [][]byte
	rv      int
	// gen makes the initial pods on demand (NewGenerated); n of them.
	gen func(i int) *corev1.Pod
	n   int
}

var (
	full = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	raw  = protobuf.NewRawSerializer(scheme.Scheme, scheme.Scheme)
)

// New serves initial pods in the list and live pods as ADDED events after it. Every pod
// gets a resourceVersion in order.
func New(initial, live []*corev1.Pod) (*Server, error) {
	s := &Server{}
	list := &corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
	for _, p := range initial {
		s.rv++
		p.ResourceVersion = strconv.Itoa(s.rv)
		list.Items = append(list.Items, *p)
		f, err := frame("ADDED", p)
		if err != nil {
			return nil, err
		}
		s.initial = append(s.initial, f)
	}
	list.ResourceVersion = strconv.Itoa(s.rv)
	var buf bytes.Buffer
	if err := full.Encode(list, &buf); err != nil {
		return nil, err
	}
	s.list = buf.Bytes()
	for _, p := range live {
		s.rv++
		p.ResourceVersion = strconv.Itoa(s.rv)
		f, err := frame("ADDED", p)
		if err != nil {
			return nil, err
		}
		s.live = append(s.live, f)
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s, nil
}

// NewGenerated serves n initial pods made by gen when a watch-list stream asks for them,
// so that a million pods cost the server no memory; pod i gets resourceVersion i+1. It
// serves no LIST (informers stream their initial list by default).
func NewGenerated(n int, gen func(i int) *corev1.Pod) *Server {
	s := &Server{gen: gen, n: n, rv: n}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// frame encodes one watch event as kube-apiserver streams it over protobuf: a
// length-prefixed, unenveloped WatchEvent whose object is enveloped.
func frame(typ string, obj runtime.Object) ([]byte, error) {
	var embedded bytes.Buffer
	if err := full.Encode(obj, &embedded); err != nil {
		return nil, err
	}
	var ev bytes.Buffer
	if err := raw.Encode(&metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: embedded.Bytes()}}, &ev); err != nil {
		return nil, err
	}
	out := make([]byte, 4+ev.Len())
	binary.BigEndian.PutUint32(out, uint32(ev.Len()))
	copy(out[4:], ev.Bytes())
	return out, nil
}

// Config returns a client configuration for the server.
func (s *Server) Config() *rest.Config {
	return &rest.Config{Host: s.URL, QPS: -1}
}

const protoContentType = "application/vnd.kubernetes.protobuf"

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/version":
		fmt.Fprint(w, `{"major":"1","minor":"37","gitVersion":"v1.37.2-benchapi"}`)
	case "/api":
		fmt.Fprint(w, `{"kind":"APIVersions","versions":["v1"]}`)
	case "/apis":
		fmt.Fprint(w, `{"kind":"APIGroupList","apiVersion":"v1","groups":[]}`)
	case "/api/v1":
		fmt.Fprint(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list","watch"],"shortNames":["po"]}]}`)
	case "/api/v1/pods":
		q := r.URL.Query()
		if q.Get("watch") != "true" && q.Get("watch") != "1" {
			if q.Get("limit") == "1" {
				// A resourceVersion probe: an empty list at the current revision.
				w.Header().Set("Content-Type", protoContentType)
				var buf bytes.Buffer
				_ = full.Encode(&corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: strconv.Itoa(s.rv)}}, &buf)
				w.Write(buf.Bytes())
				return
			}
			if s.gen != nil {
				http.Error(w, "generated pods are served by watch-list streams only", http.StatusNotImplemented)
				return
			}
			w.Header().Set("Content-Type", protoContentType)
			w.Write(s.list)
			return
		}
		w.Header().Set("Content-Type", protoContentType+";stream=watch")
		w.WriteHeader(http.StatusOK)
		if q.Get("sendInitialEvents") == "true" {
			for _, f := range s.initial {
				w.Write(f)
			}
			for i := range s.n {
				p := s.gen(i)
				p.ResourceVersion = strconv.Itoa(i + 1)
				f, err := frame("ADDED", p)
				if err != nil {
					return
				}
				if _, err := w.Write(f); err != nil {
					return
				}
			}
			bm := &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{
				ResourceVersion: strconv.Itoa(len(s.initial) + s.n), Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}
			f, _ := frame("BOOKMARK", bm)
			w.Write(f)
		}
		// Live events only on the first watch from the initial list's revision.
		if rv := q.Get("resourceVersion"); rv == strconv.Itoa(len(s.initial)) || q.Get("sendInitialEvents") == "true" {
			for _, f := range s.live {
				w.Write(f)
			}
		}
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		<-r.Context().Done()
	default:
		http.NotFound(w, r)
	}
}
