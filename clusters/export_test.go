package clusters

// Resolutions is how many discovery rounds resolved the configured resources, for tests.
func (c *Cluster) Resolutions() uint64 { return c.resolutions.Load() }

// Downloads is how many discovery rounds downloaded the discovery documents, for tests.
func (c *Cluster) Downloads() uint64 { return c.downloads.Load() }
