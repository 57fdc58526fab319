package geo

import "testing"

func TestGeographyAndLatency(t *testing.T) {
	tab := Default()
	if g := tab.Geography("westeurope"); g != "eu" {
		t.Fatalf("westeurope in %q", g)
	}
	near, far := tab.RTTMillis("us-east-1", "us-east4"), tab.RTTMillis("us-east-1", "westeurope")
	if !(near < 10 && far > 60 && far < 120) {
		t.Fatalf("us-east-1 -> us-east4 %v ms, -> westeurope %v ms: implausible", near, far)
	}
	if tab.RTTMillis("eastus", "eastus") != 1 {
		t.Fatal("same region must be ~1ms")
	}
	if tab.RTTMillis("us-east-1", "mars-1") != UnknownRTTMillis {
		t.Fatal("unknown region must rank last")
	}
	o, err := NewTable([]Region{{Name: "onprem-1", Geography: "us", Lat: 40, Lon: -75}}, map[string]float64{"us-east-1|westeurope": 70})
	if err != nil {
		t.Fatal(err)
	}
	if o.RTTMillis("westeurope", "us-east-1") != 70 || o.Geography("onprem-1") != "us" || o.RTTMillis("onprem-1", "us-east-1") > 20 {
		t.Fatal("overrides and extra regions not applied symmetrically")
	}
	for _, bad := range []map[string]float64{{"us-east-1": 5}, {"a|b": -1}} {
		if _, err := NewTable(nil, bad); err == nil {
			t.Fatalf("override %v accepted", bad)
		}
	}
}
