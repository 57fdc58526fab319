package router_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/router/capacity"
)

// A client reusing a request id that is still in flight gets ALREADY_EXISTS
// and never a second slot: with one call holding the pool's slot, nine more
// calls with the same id are all refused (they used to share the first
// call's lease and all ran, past max_concurrent).
func TestReusedRequestIDInFlightIsRefused(t *testing.T) {
	store := capacity.NewMemory(capacity.MemoryOptions{})
	p := &simPool{name: "solo", cloud: "aws", region: "us-east-1", accel: "h100", limit: 2, timeScale: 1}
	f := startFleet(t, fleetOpts{store: store, queueWait: "200ms"}, p)
	first := req("us-east-1", 400)
	first.RequestId = "shared-id-1"
	hold, cancelHold := context.WithCancel(context.Background())
	defer cancelHold()
	firstDone := make(chan error, 1)
	go func() { _, err := f.client.Generate(hold, first); firstDone <- err }()
	eventually(t, 5*time.Second, "the first call takes its slot", func() bool {
		u, _ := store.Usage(context.Background(), []string{"solo"})
		return u["solo"].InFlight == 1
	})
	var wg sync.WaitGroup
	codesSeen := make(chan codes.Code, 9)
	for i := 0; i < 9; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := req("us-east-1", 4)
			r.RequestId = first.RequestId
			_, err := f.client.Generate(ctxT(t, 5*time.Second), r)
			codesSeen <- status.Code(err)
		}()
	}
	wg.Wait()
	close(codesSeen)
	for c := range codesSeen {
		if c != codes.AlreadyExists {
			t.Errorf("a call reusing an in-flight request id: %v, want ALREADY_EXISTS", c)
		}
	}
	cancelHold()
	<-firstDone
	// Once the first call is over, its id may be used again.
	r := req("us-east-1", 4)
	r.RequestId = first.RequestId
	if _, err := f.client.Generate(ctxT(t, 5*time.Second), r); err != nil {
		t.Fatalf("the id after the first call ended: %v", err)
	}
	u, _ := store.Usage(context.Background(), []string{"solo"})
	if u["solo"].InFlight != 0 {
		t.Fatalf("in flight %d at the end, want 0", u["solo"].InFlight)
	}
}
