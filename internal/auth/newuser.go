package auth

// NewUser returns an authenticated user with the given scope (nil or empty: everything),
// for callers whose identity was established elsewhere: a sharded replica's peer asserts
// the user it authenticated (internal/sharding).
func NewUser(name string, groups, clusters, namespaces []string) *User {
	return &User{Name: name, Groups: groups, Clusters: clusters, Namespaces: namespaces, namespaces: setOf(namespaces)}
}
