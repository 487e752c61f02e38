package clusters

import "context"

// ListLimiter caps how many lists run at once across the fleet, so that starting many
// clusters does not decode every cluster's full inventory at the same time (the memory
// spike Argo CD's cluster cache guards against the same way).
type ListLimiter struct{ slots chan struct{} }

// NewListLimiter allows n concurrent lists; n <= 0 means no cap.
func NewListLimiter(n int) *ListLimiter {
	if n <= 0 {
		return nil
	}
	return &ListLimiter{slots: make(chan struct{}, n)}
}

func (l *ListLimiter) acquire(ctx context.Context) error {
	if l == nil {
		return nil
	}
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *ListLimiter) release() {
	if l != nil {
		<-l.slots
	}
}
