package kubeapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	"k8s.io/apimachinery/pkg/apis/meta/internalversion/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/request"
)

// listOptions decodes and validates a list or watch request's query parameters exactly as
// kube-apiserver does (watch=1 and watch=true both watch; sendInitialEvents needs
// resourceVersionMatch=NotOlderThan, ...).
func listOptions(r *http.Request) (*internalversion.ListOptions, *apierrors.StatusError) {
	opts := &internalversion.ListOptions{}
	if err := metainternalversionscheme.ParameterCodec.DecodeParameters(r.URL.Query(), metav1.SchemeGroupVersion, opts); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if errs := validation.ValidateListOptions(opts, true); len(errs) > 0 {
		return nil, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "ListOptions"}, "", errs)
	}
	return opts, nil
}

// A resourceVersion this API issues is "<epoch>.<cursor>": the aggregator's per-cluster
// cursor, prefixed by a number random per Handler. The cursor's positions only mean
// something to the process whose history they index: a fresh process has not seen the
// deletions that happened before it started, so it must not resume a watch from an old
// position. The epoch lets it refuse such a resourceVersion with 410 Expired, and the
// client relists.
func newEpoch() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func (h *Handler) resourceVersion(c aggregator.Cursor) string { return h.epoch + "." + c.Encode() }

var (
	errForeignVersion = errors.New("resourceVersion was issued by another fleetcache process (it restarted); list again")
	errBadVersion     = errors.New("resourceVersion is not one this server issues")
)

// parseResourceVersion reads a resourceVersion from resourceVersion(); "" and "0" are nil.
func (h *Handler) parseResourceVersion(rv string) (aggregator.Cursor, error) {
	if rv == "" || rv == "0" {
		return nil, nil
	}
	epoch, enc, ok := strings.Cut(rv, ".")
	if !ok || len(epoch) != len(h.epoch) {
		return nil, fmt.Errorf("%w: %q", errBadVersion, rv)
	}
	if epoch != h.epoch {
		return nil, errForeignVersion
	}
	c, err := aggregator.ParseCursor(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadVersion, err)
	}
	return c, nil
}

// versionError maps parseResourceVersion's errors to what kube-apiserver answers.
func versionError(err error) *apierrors.StatusError {
	if errors.Is(err, errForeignVersion) {
		return apierrors.NewResourceExpired(err.Error())
	}
	return apierrors.NewBadRequest(err.Error())
}

// behind reports whether cursor a misses a position that b has: a list at a is older than b.
func behind(a, b aggregator.Cursor) bool {
	for cluster, rv := range b {
		if a[cluster] < rv {
			return true
		}
	}
	return false
}

// A list page's continue token carries the resourceVersion of the paging's first page
// ("<resourceVersion>~<aggregator token>"), so that every page reports the same
// resourceVersion: a watch from it then replays every change made while the pages were
// read. '~' occurs in neither part.
func wrapContinue(rv, token string) string {
	if token == "" {
		return ""
	}
	return rv + "~" + token
}

func unwrapContinue(token string) (rv, inner string) {
	if rv, inner, ok := strings.Cut(token, "~"); ok {
		return rv, inner
	}
	return "", token
}

// listVersion resolves a list request's resourceVersion semantics and returns the
// resourceVersion its answer reports; it unwraps q.Continue.
//
//   - "" and "0": the current state. (Answers always come from memory, so both are the
//     same; kube-apiserver also ignores limit for "0", which the caller handles.)
//   - a resourceVersion this process issued, NotOlderThan (the default): the current
//     state, which is never older than a position this process reported.
//   - Exact: only the current position can be served; an older one is 410 Expired, as
//     kube-apiserver answers for a compacted revision.
//   - one from another process: 410 Expired; the client lists again with "".
func (h *Handler) listVersion(opts *internalversion.ListOptions, q *aggregator.Query) (string, *apierrors.StatusError) {
	if q.Continue != "" {
		rv, inner := unwrapContinue(q.Continue)
		q.Continue = inner
		if rv != "" {
			if _, err := h.parseResourceVersion(rv); err != nil {
				return "", versionError(err)
			}
			return rv, nil
		}
	}
	asked, err := h.parseResourceVersion(opts.ResourceVersion)
	if err != nil {
		return "", versionError(err)
	}
	now, err := h.Index.Cursor(*q)
	if err != nil {
		return "", request.Status(err)
	}
	if asked != nil && opts.ResourceVersionMatch == metav1.ResourceVersionMatchExact && (behind(asked, now) || behind(now, asked)) {
		return "", apierrors.NewResourceExpired(fmt.Sprintf("resourceVersion %s: only the current state is kept; list with resourceVersionMatch=NotOlderThan or without a resourceVersion", opts.ResourceVersion))
	}
	return h.resourceVersion(now), nil
}
