package clusters_test

import (
	"testing"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// fleet is the package's real local fleet: three clusters, seeded once.
var fleet *testfleet.Fleet

func TestMain(m *testing.M) { testfleet.Main(m, testfleet.Options{Clusters: 3}, &fleet) }
