package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetcache/fleetcache/clusters"
)

// The collector's metrics. prometheus.MustNewConstMetric builds every series' label pairs
// anew (three allocations per label) and its value; at 1,000 clusters a per-resource
// scrape has 800,000 series. These share label pairs between the series of one cluster
// and resource (a collected metric's labels are immutable by the Metric contract) and
// come from slabs: a series costs the registry's own allocations only.

// labelPair is one label, built once per scrape and shared by the series that carry it.
func labelPair(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: &name, Value: &value}
}

// sample is a gauge or counter value with shared, sorted label pairs.
type sample struct {
	desc    *prometheus.Desc
	labels  []*dto.LabelPair
	value   float64
	counter bool
	g       dto.Gauge
	c       dto.Counter
}

func (s *sample) Desc() *prometheus.Desc { return s.desc }

func (s *sample) Write(m *dto.Metric) error {
	m.Label = s.labels
	if s.counter {
		s.c.Value = &s.value
		m.Counter = &s.c
	} else {
		s.g.Value = &s.value
		m.Gauge = &s.g
	}
	return nil
}

// histogram is a const histogram with shared label pairs; its buckets are written in one
// slab.
type histogram struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	h      dto.Histogram
}

// newHistogram is the histogram h (its Buckets map upper bounds to cumulative counts).
func newHistogram(d *prometheus.Desc, h clusters.Histogram, labels []*dto.LabelPair) *histogram {
	out := &histogram{desc: d, labels: labels}
	bounds := make([]float64, 0, len(h.Buckets))
	for b := range h.Buckets {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	counts := make([]uint64, len(bounds))
	buckets := make([]dto.Bucket, len(bounds))
	out.h.Bucket = make([]*dto.Bucket, len(bounds))
	for i, b := range bounds {
		counts[i] = h.Buckets[b]
		buckets[i].UpperBound, buckets[i].CumulativeCount = &bounds[i], &counts[i]
		out.h.Bucket[i] = &buckets[i]
	}
	count, sum := h.Count, h.Sum
	out.h.SampleCount, out.h.SampleSum = &count, &sum
	return out
}

func (h *histogram) Desc() *prometheus.Desc { return h.desc }

func (h *histogram) Write(m *dto.Metric) error {
	m.Label = h.labels
	m.Histogram = &h.h
	return nil
}
