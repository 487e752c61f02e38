// Package request is the read pipeline every HTTP face of fleetcache shares: the JSON API
// under /api/v1 (internal/server) and the Kubernetes API under /fleet and
// /clusters/{name} (internal/kubeapi). A face parses its URL shape into a Read and encodes
// what the pipeline yields; everything in between is decided here, once:
//
//	parse (the face) → authenticate and scope (auth.User in the context, set by the
//	server's guard; Scope) → resolve the resource and apply the Secret policy (Resolve,
//	Visible) → limits (Query: page size, selectors; the response cap) → admission
//	(fairness.go: list seats, fair queuing per client; lists, and counts that read every
//	object) → query the index under the request's context → a result stream handed to
//	the face's encoder (List, Stream).
//
// Parts:
//   - request.go: Options (every default, with its reason), the Pipeline, Read → Query.
//   - errors.go: the one mapping of errors to HTTP status codes and reasons (Status), and
//     WriteError, which encodes it as the face of the request speaks (a Kubernetes Status
//     for /fleet and /clusters, {code, reason, message} for /api/v1).
//   - path.go: the one path rule (CheckPath), asked by the server's guard before any
//     route: a path that could mean two things is 400, a URL past MaxURLBytes 414.
//   - detect.go: what a request is from its URL alone (IsWatch, FaceOf), for the
//     in-flight and watch caps and the HTTP metrics: one watch detection, as
//     kube-apiserver's (watch=1, watch=true, ... on a collection or a named object; on
//     no other path).
//   - list.go: a list admitted, queried and streamed through a face's ListEncoder, cut at
//     MaxResponseBytes with a continue token (the Budget); a whole list is read from the
//     index a chunk at a time as it is written.
//   - stream.go: a watch stream's life: every event written within StreamWriteTimeout,
//     and the one place streams end when the server shuts down (EndStreams).
//   - fairness.go: admission of expensive requests (lists, and counts that read a field
//     from every object) after the apiserver's API Priority and Fairness.
//
// Contract: a face never decides a policy. Page sizes (PageSize) are one rule under each
// API's contract: on /api/v1 a page is 1 to MaxLimit items, DefaultLimit when none is
// asked, anything else a 400 naming limit; on the Kubernetes API a limit is an upper bound
// (none or 0 is everything, more than MaxLimit is MaxLimit), and a list answered whole
// (Read.Whole: its JSON and Table lists) ignores it once validated. Every list that asked
// for a page, whole or paged, of either face and in every encoding, stops once its
// encoded items reach MaxResponseBytes and continues with a token; a Kubernetes API list
// asked without a limit (Read.AtOnce) is everything in one answer, as kube-apiserver's.
// Secrets are visible only with ServeSecrets (and never carry values: the cache drops
// them). The pipeline holds no per-request state; a Pipeline is safe for concurrent use.
package request
