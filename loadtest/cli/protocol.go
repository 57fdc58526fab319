package cli

import (
	"fmt"
	"strings"

	"github.com/switchyard-dev/switchyard/loadtest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Protocols the load tester speaks to the router.
const (
	protoGRPC   = "grpc"   // switchyard.v1.Inference on --target
	protoOpenAI = "openai" // the OpenAI-compatible HTTP front door on --http-target
)

// protocols parses --protocol: one of grpc and openai, or both
// comma-separated to replay the trace once through each and compare.
func (c *config) protocols() ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, p := range strings.Split(c.protocol, ",") {
		p = strings.TrimSpace(p)
		if p == "" || seen[p] {
			continue
		}
		if p != protoGRPC && p != protoOpenAI {
			return nil, fmt.Errorf("--protocol %q: want grpc, openai or grpc,openai", p)
		}
		seen[p] = true
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--protocol %q: want grpc, openai or grpc,openai", c.protocol)
	}
	return out, nil
}

// inferenceClient returns the clients replays use for protocol p (one per
// gRPC connection; one OpenAIClient, whose transport pools connections), and
// a closer.
func (c *config) inferenceClient(p string, grpcClients []pb.InferenceClient) ([]pb.InferenceClient, func(), error) {
	if p == protoGRPC {
		return grpcClients, func() {}, nil
	}
	oc, err := loadtest.NewOpenAIClient(loadtest.OpenAIOptions{BaseURL: c.httpTarget, MaxConns: c.maxConcurrency, HTTP2: c.http2})
	if err != nil {
		return nil, nil, fmt.Errorf("--http-target: %w", err)
	}
	return []pb.InferenceClient{oc}, oc.Close, nil
}

// runLabel names one run in the report: the policy, the protocol, or both
// when both vary.
func runLabel(policy, protocol string, protocols int) string {
	switch {
	case protocols > 1 && policy != "":
		return policy + "/" + protocol
	case protocols > 1:
		return protocol
	case policy != "":
		return policy
	}
	return "run"
}
