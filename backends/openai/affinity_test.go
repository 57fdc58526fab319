package openai

import (
	"strings"
	"testing"
	"time"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Endpoint affinity: one key always picks one endpoint while it is within
// the load bound; beyond it (or refusing calls) the least loaded goes; a
// short prompt has no key.
func TestEndpointAffinityWithinTheLoadBound(t *testing.T) {
	s := &endpointSet{cfg: &poolConfig{pool: "p"}}
	eps := []*endpoint{{name: "a:1"}, {name: "b:1"}, {name: "c:1"}, {name: "d:1"}}
	s.cur.Store(&eps)
	now := time.Now()
	long := strings.Repeat("shared prefix ", 400)
	key := affinityKey(&pb.GenerateRequest{Prompt: long + "one"})
	if key == 0 || key != affinityKey(&pb.GenerateRequest{Prompt: long + "two"}) {
		t.Fatal("prompts sharing their first two blocks have different keys")
	}
	if affinityKey(&pb.GenerateRequest{Prompt: "short"}) != 0 {
		t.Fatal("a short prompt has a key")
	}
	if affinityKey(&pb.GenerateRequest{Prompt: "short", Routing: &pb.RoutingHints{PrefixKey: "s1"}}) == 0 {
		t.Fatal("an explicit prefix key has no key")
	}
	first, err := s.pick(now, key)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if e, _ := s.pick(now, key); e != first {
			t.Fatalf("one key picked %s and %s", first.name, e.name)
		}
	}
	// Loaded beyond ⌈1.25 × mean⌉: 4 outstanding there, none elsewhere.
	first.outstanding.Store(4)
	if e, _ := s.pick(now, key); e == first {
		t.Fatal("the affine endpoint took a call beyond the load bound")
	}
	first.outstanding.Store(0)
	first.refuse(now.Add(time.Minute))
	if e, _ := s.pick(now, key); e == first {
		t.Fatal("the affine endpoint took a call while refusing calls")
	}
}
