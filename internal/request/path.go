package request

import (
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Bounds on a request's line and headers, as kube-apiserver's: a URL past MaxURLBytes is
// 414; headers past MaxHeaderBytes are 431 (http.Server.MaxHeaderBytes, set by cmd).
const (
	MaxURLBytes    = 16 << 10
	MaxHeaderBytes = 256 << 10
)

// CheckPath refuses a request whose path could mean two things: to this server and to
// whatever it passes a part of the path on to. Nothing fleetcache serves is named with
// them, so each is a 400 (a URL too long is 414):
//   - dot segments ("." or ".."), spelled plainly or percent-encoded in any case;
//   - encoded slashes or backslashes (%2F, %5C), and backslashes themselves;
//   - double encoding (%25), semicolons in any spelling, and encodings of characters
//     that never need one ("%61" for "a"): the same name spelled two ways;
//   - empty segments ("//"), control characters and paths that are not UTF-8.
//
// The server's guard asks it before anything else, on every route of both faces; the
// code that builds upstream requests validates its own parts again (the rule of
// docs/security.md: nothing a caller sends shapes an upstream request).
func CheckPath(r *http.Request) error {
	if len(r.RequestURI) > MaxURLBytes || len(r.URL.RawQuery) > MaxURLBytes {
		return Failure(http.StatusRequestURITooLong, metav1.StatusReason("RequestURITooLong"),
			fmt.Sprintf("the request URL is longer than %d bytes", MaxURLBytes))
	}
	raw := r.URL.EscapedPath()
	if r.URL.RawPath != "" {
		raw = r.URL.RawPath
	}
	if reason := pathProblem(raw, r.URL.Path); reason != "" {
		return Failure(http.StatusBadRequest, metav1.StatusReasonBadRequest, "request path refused: "+reason)
	}
	return nil
}

// pathProblem says what is wrong with a path: raw as sent, path as decoded; "" for
// nothing.
func pathProblem(raw, path string) string {
	if !strings.HasPrefix(path, "/") {
		return "it does not start with /"
	}
	if !utf8.ValidString(path) {
		return "it is not UTF-8"
	}
	for _, c := range path {
		if c < 0x20 || c == 0x7f {
			return "it holds a control character"
		}
	}
	if strings.ContainsAny(path, `\;`) {
		return "it holds a backslash or a semicolon"
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '%' {
			continue
		}
		if i+2 >= len(raw) || !ambiguousEscape(raw[i+1], raw[i+2]) {
			continue // a malformed escape never parses; the rest is a name's own byte
		}
		return "it percent-encodes a character that needs no encoding or changes the path (" + raw[i:i+3] + ")"
	}
	segs := strings.Split(path[1:], "/")
	for i, s := range segs {
		switch {
		case s == "." || s == "..":
			return "it holds a dot segment (" + s + ")"
		case s == "" && i != len(segs)-1:
			return "it holds an empty segment (//)"
		}
	}
	return ""
}

// ambiguousEscape reports whether %hl encodes a byte that a path only encodes to mean
// something else than it says: a dot, a slash or backslash, a percent sign (double
// encoding), a semicolon, a control character, or a character that never needs encoding
// (letters, digits, - _ ~). A cluster name's space or colon may be encoded; these not.
func ambiguousEscape(h, l byte) bool {
	b, ok := unhex(h)
	c, ok2 := unhex(l)
	if !ok || !ok2 {
		return false
	}
	v := b<<4 | c
	switch {
	case v < 0x20, v == 0x7f, strings.IndexByte(`./\%;-_~`, v) >= 0,
		'a' <= v && v <= 'z', 'A' <= v && v <= 'Z', '0' <= v && v <= '9':
		return true
	}
	return false
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
