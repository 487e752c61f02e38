// Package memstat measures a process's memory the same way in fleetcache's memory
// benchmarks and in the baseline programs they compare against (examples/plaininformer).
package memstat

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Report is one process's memory once its caches are synced.
type Report struct {
	Objects int `json:"objects"`
	// HeapInuseBytes and HeapAllocBytes are read after two garbage collections (the
	// second frees what the first only moved to sync.Pools' victim caches).
	HeapInuseBytes uint64 `json:"heapInuseBytes"`
	HeapAllocBytes uint64 `json:"heapAllocBytes"`
	// RSSBytes is read after free memory was returned to the operating system;
	// PeakRSSBytes is the process's high-water mark (VmHWM), syncing included.
	RSSBytes     uint64  `json:"rssBytes"`
	PeakRSSBytes uint64  `json:"peakRSSBytes"`
	SyncSeconds  float64 `json:"syncSeconds"`
}

// Measure fills in r's heap and RSS figures.
func Measure(r *Report) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.HeapInuseBytes, r.HeapAllocBytes = ms.HeapInuse, ms.HeapAlloc
	debug.FreeOSMemory()
	r.RSSBytes, r.PeakRSSBytes = status("VmRSS:"), status("VmHWM:")
}

// status reads a size in kB from /proc/self/status; 0 where there is none.
func status(field string) uint64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
