package sim

import (
	"testing"
	"time"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func TestNetworkDelayFollowsCallerDistance(t *testing.T) {
	p, err := NewPool(Options{Name: "p", Accelerator: "h100", MaxBatch: 2, TimeScale: 10, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	from := func(region string) time.Duration {
		return p.networkDelay(&pb.GenerateRequest{Routing: &pb.RoutingHints{CallerRegion: region}})
	}
	same, near, far := from("us-east-1"), from("us-east4"), from("westeurope")
	if !(same < near && near < far) {
		t.Fatalf("delays same %v near %v far %v: want increasing with distance", same, near, far)
	}
	// ~85 ms round trip to Amsterdam, at time scale 10.
	if far < 5*time.Millisecond || far > 15*time.Millisecond {
		t.Fatalf("us-east-1 <- westeurope delay %v at time scale 10, want ~8.5ms", far)
	}
	if d := from(""); d != 0 {
		t.Fatalf("no caller region: %v", d)
	}
	if d := from("mars-1"); d != 0 {
		t.Fatalf("unknown caller region: %v", d)
	}
}
