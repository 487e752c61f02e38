package kubeapi

import (
	"bytes"
	"context"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/request"
)

// DefaultBookmarkInterval is how often a watch that allows bookmarks gets one when
// nothing else happens: about what kube-apiserver does, often enough that a client
// resuming after a dropped connection finds its position still in the history.
const DefaultBookmarkInterval = time.Minute

// watch serves a watch, following kube-apiserver's semantics:
//
//   - sendInitialEvents=true (client-go's WatchList, the default since v1.35): an ADDED
//     event for every selected object, from one snapshot per cluster, then a BOOKMARK
//     annotated k8s.io/initial-events-end=true whose resourceVersion is the snapshot's
//     position, then every later change. resourceVersion may be "" or one this process
//     issued (the current state is never older than it).
//   - resourceVersion "" or "0" without sendInitialEvents: the same initial events
//     without the closing bookmark ("get state and start at most recent").
//   - a resourceVersion this process issued: every change after it, or an ERROR event
//     410 Expired when the history no longer reaches back that far or the
//     resourceVersion comes from another process; the client lists again.
//
// Objects carry their cluster annotation and, as resourceVersion, the position after
// their event. With allowWatchBookmarks the stream carries BOOKMARK events with the
// current position (objects of the resource's kind holding only that).
func (h *Handler) watch(w http.ResponseWriter, r *http.Request, q aggregator.Query, info aggregator.ResourceInfo, opts *internalversion.ListOptions) {
	var wopts aggregator.WatchOptions
	endBookmark := false
	var startErr *apierrors.StatusError
	from, err := h.parseResourceVersion(opts.ResourceVersion)
	switch {
	case err != nil:
		startErr = versionError(err)
	case opts.SendInitialEvents != nil:
		wopts.InitialEvents, endBookmark = *opts.SendInitialEvents, *opts.SendInitialEvents
		wopts.From = from
	case from == nil:
		wopts.InitialEvents = true
	default:
		wopts.From = from
	}

	ctx := r.Context()
	if opts.TimeoutSeconds != nil && *opts.TimeoutSeconds > 0 {
		var cancel func()
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*opts.TimeoutSeconds)*time.Second)
		defer cancel()
	}
	var wi watch.Interface
	if startErr == nil {
		if wi, err = h.Pipeline.Watch(ctx, q, wopts); err != nil {
			startErr = request.Status(err)
		}
	}
	// Errors about the request itself are HTTP errors; one about where the stream would
	// start (410) is, as kube-apiserver sends it, the stream's only event.
	if startErr != nil && startErr.Status().Code != http.StatusGone {
		writeStatus(w, startErr)
		return
	}
	if wi != nil {
		defer wi.Stop()
	}

	asTable := WantsTable(r)
	s := negotiate(r, info)
	if asTable {
		s, _ = serializers(mediaJSON)
	}
	enc := newEventEncoder(w, s)
	contentType := s.MediaType
	if isProtobuf(s) {
		contentType += ";stream=watch" // as kube-apiserver marks a framed protobuf stream
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	if startErr != nil {
		st := startErr.Status()
		_ = enc.encode(watch.Error, &st)
		return
	}

	interval := h.BookmarkInterval
	if interval <= 0 {
		interval = DefaultBookmarkInterval
	}
	position := ""
	h.Pipeline.Stream(ctx, w, wi.ResultChan(), interval, func(ev *watch.Event) error {
		var out runtime.Object
		typ := watch.Bookmark
		if ev == nil { // a quiet interval
			if !opts.AllowWatchBookmarks || position == "" {
				return nil
			}
			out = h.bookmark(info, position, false)
		} else {
			typ = ev.Type
			out = h.eventObject(*ev, info, asTable, opts.AllowWatchBookmarks, endBookmark, &position)
		}
		if out == nil {
			return nil
		}
		return enc.encode(typ, out)
	})
}

// eventObject converts an index event to the object sent for it; nil skips the event.
// position tracks the stream's current resourceVersion.
func (h *Handler) eventObject(ev watch.Event, info aggregator.ResourceInfo, asTable, bookmarks, endBookmark bool, position *string) runtime.Object {
	switch o := ev.Object.(type) {
	case *aggregator.WatchItem:
		rv := h.epoch + "." + o.Cursor
		*position = rv
		if ev.Type == watch.Bookmark {
			end := o.InitialEventsEnd && endBookmark
			if !end && !bookmarks {
				return nil
			}
			return h.bookmark(info, rv, end)
		}
		obj, err := tagged(o.Item)
		if err != nil {
			st := apierrors.NewInternalError(err).Status()
			return &st
		}
		if asTable {
			return table(info, []aggregator.Item{o.Item}, []runtime.Object{obj}, rv)
		}
		if m, err := meta.Accessor(obj); err == nil {
			m.SetResourceVersion(rv) // resuming from it continues the fleet's stream
		}
		return obj
	case *metav1.Status:
		return o
	}
	return nil
}

// bookmark is a BOOKMARK event's object: as client-go requires, an object of the watched
// kind, holding only the position (and, at the end of the initial events, the
// k8s.io/initial-events-end annotation).
func (h *Handler) bookmark(info aggregator.ResourceInfo, rv string, initialEventsEnd bool) runtime.Object {
	gvk := schema.FromAPIVersionAndKind(info.APIVersion, info.Kind)
	var obj runtime.Object
	if typed(info) {
		obj, _ = scheme.Scheme.New(gvk)
	}
	if obj == nil {
		obj = &unstructured.Unstructured{}
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil
	}
	m.SetResourceVersion(rv)
	if initialEventsEnd {
		m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	}
	return obj
}

// eventEncoder writes watch events as kube-apiserver does: each object encoded with the
// negotiated serializer into a metav1.WatchEvent, framed by the serializer's stream
// framer (newline-separated JSON, length-delimited protobuf).
type eventEncoder struct {
	stream   streaming.Encoder
	embedded runtime.Encoder
	buf      bytes.Buffer
}

func newEventEncoder(w http.ResponseWriter, s runtime.SerializerInfo) *eventEncoder {
	return &eventEncoder{
		stream:   streaming.NewEncoder(s.StreamSerializer.Framer.NewFrameWriter(w), s.StreamSerializer.Serializer),
		embedded: s.Serializer,
	}
}

func (e *eventEncoder) encode(typ watch.EventType, obj runtime.Object) error {
	if st, ok := obj.(*metav1.Status); ok && st.Kind == "" {
		c := *st
		c.Kind, c.APIVersion = "Status", "v1"
		obj = &c
	}
	e.buf.Reset()
	if err := e.embedded.Encode(obj, &e.buf); err != nil {
		return err
	}
	return e.stream.Encode(&metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: e.buf.Bytes()}})
}
