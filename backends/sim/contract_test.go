package sim

import (
	"testing"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/backendtest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// The simulated pool passes the contract every adapter passes.
func TestBackendContract(t *testing.T) {
	newPool := func(t *testing.T) *Pool {
		p, err := NewPool(Options{Name: "contract", Accelerator: "h100", MaxBatch: 16, TimeScale: 50})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	backendtest.Run(t, backendtest.Harness{
		New:           func(t *testing.T) backends.Backend { return newPool(t) },
		Model:         "m",
		LongMaxTokens: 4000,
		Broken: func(t *testing.T) backends.Backend {
			p := newPool(t)
			if err := p.SetFault(&pb.Fault{Outage: true}); err != nil {
				t.Fatal(err)
			}
			return p
		},
		ClientFault:   &pb.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 4, Continuation: &pb.Continuation{GeneratedTokens: -1}},
		Deterministic: true,
	})
}
