// Package aggregator will hold the unified multi-cluster index over every cluster's cache
// (keys cluster/namespace/name) and the queries over it. It may import clusters; clusters
// never imports it.
package aggregator
