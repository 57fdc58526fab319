// Package geo knows where cloud regions are (the router and the simulator
// both use it; it imports nothing from the project): their geography (us, eu, apac)
// for residency and affinity, and an estimated round-trip latency between any
// two regions for ordering farther pools.
//
// Latency defaults come from great-circle distance between the regions'
// metro areas: RTT ≈ 2 × distance / (200 km/ms, light in fibre) × 1.4 (route
// indirection), plus 2 ms. Published inter-region RTT tables (cloudping,
// Azure network latency stats) agree within about 20% for the pairs listed.
// Operators override any pair in the fleet config.
package geo

import (
	"fmt"
	"math"
	"strings"
	"sync"
)

// Region is a known cloud region.
type Region struct {
	Name      string
	Cloud     string
	Geography string // us, eu, apac, sa, ...
	Lat, Lon  float64
}

// Known lists the regions switchyard knows without configuration.
var Known = map[string]Region{}

func add(cloud, geo string, lat, lon float64, names ...string) {
	for _, n := range names {
		Known[n] = Region{Name: n, Cloud: cloud, Geography: geo, Lat: lat, Lon: lon}
	}
}

func init() {
	// AWS
	add("aws", "us", 38.9, -77.4, "us-east-1")
	add("aws", "us", 40.0, -83.0, "us-east-2")
	add("aws", "us", 37.4, -122.0, "us-west-1")
	add("aws", "us", 45.8, -119.7, "us-west-2")
	add("aws", "eu", 53.3, -6.3, "eu-west-1")
	add("aws", "eu", 51.5, -0.1, "eu-west-2")
	add("aws", "eu", 50.1, 8.7, "eu-central-1")
	add("aws", "eu", 59.3, 18.1, "eu-north-1")
	add("aws", "apac", 35.7, 139.7, "ap-northeast-1")
	add("aws", "apac", 1.35, 103.8, "ap-southeast-1")
	// Google Cloud
	add("gcp", "us", 41.3, -95.9, "us-central1")
	add("gcp", "us", 33.2, -80.0, "us-east1")
	add("gcp", "us", 39.0, -77.5, "us-east4")
	add("gcp", "us", 33.0, -96.8, "us-south1")
	add("gcp", "us", 45.6, -121.2, "us-west1")
	add("gcp", "us", 36.2, -115.1, "us-west4")
	add("gcp", "eu", 53.4, 6.8, "europe-west4")
	add("gcp", "eu", 50.5, 3.8, "europe-west1")
	add("gcp", "eu", 50.1, 8.7, "europe-west3")
	add("gcp", "eu", 60.6, 27.2, "europe-north1")
	add("gcp", "apac", 35.7, 139.7, "asia-northeast1")
	add("gcp", "apac", 1.35, 103.8, "asia-southeast1")
	// Azure
	add("azure", "us", 37.4, -79.0, "eastus", "eastus2")
	add("azure", "us", 41.6, -93.6, "centralus")
	add("azure", "us", 29.4, -98.5, "southcentralus")
	add("azure", "us", 47.2, -119.9, "westus2")
	add("azure", "us", 33.4, -112.1, "westus3")
	add("azure", "eu", 52.4, 4.9, "westeurope")
	add("azure", "eu", 53.3, -6.3, "northeurope")
	add("azure", "eu", 48.9, 2.4, "francecentral")
	add("azure", "eu", 47.4, 8.5, "switzerlandnorth")
	add("azure", "eu", 60.7, 17.1, "swedencentral")
	add("azure", "apac", 35.7, 139.7, "japaneast")
}

// GeographyOf returns the region's geography, or "" when unknown.
func GeographyOf(region string) string {
	if r, ok := Known[region]; ok {
		return r.Geography
	}
	return ""
}

// Table answers latency questions between regions. The zero value is not
// usable; use NewTable. A Table is read-only after construction and safe for
// concurrent use.
type Table struct {
	regions map[string]Region
	// rtt holds every pair of known regions, overrides applied, so a lookup
	// on the routing hot path is one map access.
	rtt map[[2]string]float64
}

// NewTable builds a latency table from the known regions plus extra regions and
// per-pair overrides in milliseconds (keys "a|b", symmetric).
func NewTable(extra []Region, overrides map[string]float64) (*Table, error) {
	t := &Table{regions: map[string]Region{}, rtt: map[[2]string]float64{}}
	for k, v := range Known {
		t.regions[k] = v
	}
	for _, r := range extra {
		t.regions[r.Name] = r
	}
	for k, ms := range overrides {
		a, b, ok := strings.Cut(k, "|")
		if !ok || a == "" || b == "" {
			return nil, fmt.Errorf("latency override %q: want \"regionA|regionB\"", k)
		}
		if ms < 0 || math.IsNaN(ms) {
			return nil, fmt.Errorf("latency override %q: %v ms is not a latency", k, ms)
		}
		t.rtt[[2]string{a, b}] = ms
		t.rtt[[2]string{b, a}] = ms
	}
	for a, ra := range t.regions {
		for b, rb := range t.regions {
			if _, set := t.rtt[[2]string{a, b}]; !set {
				t.rtt[[2]string{a, b}] = estimate(ra, rb)
			}
		}
	}
	return t, nil
}

// Geography returns the region's geography, or "" when unknown.
func (t *Table) Geography(region string) string { return t.regions[region].Geography }

// Unknown latency used when either region is not known: far enough to rank last.
const UnknownRTTMillis = 250

// RTTMillis estimates the round trip between two regions in milliseconds.
func (t *Table) RTTMillis(a, b string) float64 {
	if a == b {
		return 1
	}
	if ms, ok := t.rtt[[2]string{a, b}]; ok {
		return ms
	}
	return UnknownRTTMillis
}

func estimate(a, b Region) float64 {
	if a.Name == b.Name {
		return 1
	}
	km := haversineKm(a.Lat, a.Lon, b.Lat, b.Lon)
	return 2 + 2*km/200*1.4
}

func haversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0
	rad := math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	h := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(h)))
}

// defaultTable is built on first use: package variables initialise before
// init() fills Known, so it cannot be built eagerly.
var defaultTable = sync.OnceValue(func() *Table {
	t, err := NewTable(nil, nil)
	if err != nil {
		panic(err) // the built-in table has no overrides to get wrong
	}
	return t
})

// Default returns the table of built-in regions with estimated latencies.
// Safe for concurrent use.
func Default() *Table { return defaultTable() }
