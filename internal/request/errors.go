package request

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fleetcache/fleetcache/aggregator"
)

// ErrSecretsOff refuses Secrets unless Options.ServeSecrets.
var ErrSecretsOff = errors.New("secrets are not served (set api.serveSecrets: true to serve them, always without values)")

// BadParam is a 400 that names the parameter.
type BadParam struct{ Name, Msg string }

func (e BadParam) Error() string { return fmt.Sprintf("query parameter %q: %s", e.Name, e.Msg) }

// TooMany is a 429: a limit on concurrent work was reached; the client may try again
// after RetryAfter seconds.
type TooMany struct {
	Msg        string
	RetryAfter int
}

func (e TooMany) Error() string { return e.Msg }

// Status maps an error to the status every face answers with (kube-apiserver's codes and
// reasons): the one error mapping of fleetcache.
//
//	*apierrors.StatusError          itself (a face built it: a Kubernetes API 404, 405, ...)
//	aggregator.ErrExpired           410 Expired: list again
//	aggregator.ErrUnknownResource,
//	ErrUnknownCluster, ErrNotFound  404 NotFound
//	ErrSecretsOff                   403 Forbidden
//	TooMany                         429 TooManyRequests, with Retry-After
//	BadParam, ErrInvalidToken, any other error: 400 BadRequest
func Status(err error) *apierrors.StatusError {
	var se *apierrors.StatusError
	var tm TooMany
	switch {
	case errors.As(err, &se):
		return se
	case errors.Is(err, aggregator.ErrExpired):
		return apierrors.NewResourceExpired(err.Error())
	case errors.Is(err, aggregator.ErrUnknownResource), errors.Is(err, aggregator.ErrUnknownCluster), errors.Is(err, aggregator.ErrNotFound):
		return Failure(http.StatusNotFound, metav1.StatusReasonNotFound, err.Error())
	case errors.Is(err, ErrSecretsOff):
		return Failure(http.StatusForbidden, metav1.StatusReasonForbidden, err.Error())
	case errors.As(err, &tm):
		return apierrors.NewTooManyRequests(tm.Msg, tm.RetryAfter)
	}
	return apierrors.NewBadRequest(err.Error())
}

// Failure is an error answered with code, reason and msg as they are.
func Failure(code int32, reason metav1.StatusReason, msg string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg}}
}

// Face is an HTTP face of the daemon.
type Face int

const (
	// FaceJSON is /api/v1, /metrics and the rest: errors are {code, reason, message}.
	FaceJSON Face = iota
	// FaceKube is the Kubernetes API (/fleet/, /clusters/): errors are a metav1.Status.
	FaceKube
)

// FaceOf tells a request's face from its path.
func FaceOf(r *http.Request) Face {
	if _, ok := kubePath(r.URL.Path); ok {
		return FaceKube
	}
	return FaceJSON
}

// WriteError answers err, mapped by Status, as the request's face writes errors.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	st := Status(err)
	if FaceOf(r) == FaceKube {
		WriteStatus(w, st)
		return
	}
	header(w, st)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ") // small and read by people
	_ = enc.Encode(APIError{Code: int(st.ErrStatus.Code), Reason: string(st.ErrStatus.Reason), Message: st.ErrStatus.Message})
}

// WriteStatus answers an error as kube-apiserver does: a metav1.Status.
func WriteStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	header(w, err)
	_ = json.NewEncoder(w).Encode(&st)
}

func header(w http.ResponseWriter, err *apierrors.StatusError) {
	st := &err.ErrStatus
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(st.Details.RetryAfterSeconds)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
}

// APIError is the body of every /api/v1 error response.
type APIError struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}
