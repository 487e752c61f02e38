package glob

import "testing"

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"prod-*", "prod-eu", true},
		{"prod-*", "staging-eu", false},
		{"*", "arn:aws:eks:eu-west-1:123:cluster/prod", true},
		{"team/*", "team/prod", true},
		{"*/prod", "team/prod", true},
		{"team/?rod", "team/prod", true},
		{"[ab]*", "bravo", true},
		{"[ab]*", "charlie", false},
		{"alpha", "alpha", true},
		{"alpha", "alphabet", false},
		{"[", "[", false}, // malformed: matches nothing
	} {
		if got := Match(tc.pattern, tc.name); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
	if Validate("[") == nil || Validate("prod-*") != nil {
		t.Error("Validate does not tell a malformed pattern from a good one")
	}
	if HasMeta("alpha") || !HasMeta("al*") {
		t.Error("HasMeta")
	}
}
