// Package glob matches names (clusters, kubeconfig contexts) against shell patterns:
// '*' and '?' match any characters including '/', which context names often contain
// (EKS ARNs, "team/prod"), and '[...]' a character class. It is the one matcher
// fleetcache uses for every pattern a user writes: context filters, the cluster query
// parameter, token scopes.
package glob

import (
	"path/filepath"
	"strings"
)

// sep stands for '/' while matching, so that filepath.Match's '*' crosses it.
const sep = "\x00"

// Match reports whether name matches pattern. A malformed pattern matches nothing
// (Validate tells why).
func Match(pattern, name string) bool {
	ok, _ := filepath.Match(strings.ReplaceAll(pattern, "/", sep), strings.ReplaceAll(name, "/", sep))
	return ok
}

// Validate reports whether pattern is well formed.
func Validate(pattern string) error {
	_, err := filepath.Match(strings.ReplaceAll(pattern, "/", sep), "")
	return err
}

// HasMeta reports whether pattern has glob characters: a pattern without them names one
// thing, and naming something that does not exist is an error rather than no match.
func HasMeta(pattern string) bool { return strings.ContainsAny(pattern, `*?[\`) }
