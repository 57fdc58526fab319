package router

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// FuzzValidateRequest: any bytes a client can send as a GenerateRequest are
// validated without a panic; a refusal is INVALID_ARGUMENT-class and names
// its field (which the gRPC edge puts in a BadRequest), and its text stays short whatever the
// request holds (client input is quoted at most 64 bytes); an accepted request fits the model's limits. It targets
// validateRequest, the request path's one validation entry (Server.Complete
// and CompleteStream call it through admit). Seeds:
// testdata/fuzz/FuzzValidateRequest (valid and invalid requests, encoded).
func FuzzValidateRequest(f *testing.F) {
	seed, _ := proto.Marshal(&pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 8})
	f.Add(seed)
	m := config.Model{Name: "m", MaxInputTokens: 1000, MaxOutputTokens: 500}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &pb.GenerateRequest{}
		if err := proto.Unmarshal(data, req); err != nil {
			return // the transport refuses what does not decode
		}
		err := validateRequest(req, m)
		if err != nil {
			if !isInvalid(err) {
				t.Fatalf("refusal is not INVALID_ARGUMENT: %v", err)
			}
			if n := len(err.Error()); n > 512 {
				t.Fatalf("refusal text of %d bytes for a %d-byte request: %.200s", n, len(data), err.Error())
			}
			// Every refusal names its field for clients (each edge puts the
			// fields on its wire: a BadRequest on gRPC, param on HTTP).
			var inv *dispatch.InvalidError
			if !errors.As(err, &inv) || dispatch.CodeOf(err) != dispatch.CodeInvalid || len(inv.Fields) == 0 || slices.Contains(inv.Fields, "") {
				t.Fatalf("refusal %v names fields %v", err, inv)
			}
			return
		}
		if n := backends.InputBytes(req); n > m.MaxInputTokens*backends.BytesPerToken {
			t.Fatalf("accepted %d input bytes over the model's %d tokens", n, m.MaxInputTokens)
		}
		if req.GetMaxTokens() < 1 || int(req.GetMaxTokens()) > m.MaxOutputTokens {
			t.Fatalf("accepted max_tokens %d", req.GetMaxTokens())
		}
	})
}

func isInvalid(err error) bool {
	var inv *dispatch.InvalidError
	return errors.As(err, &inv)
}
