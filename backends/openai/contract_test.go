package openai

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/backendtest"
	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// The adapter passes the contract every adapter passes, against a real
// llama-server (a real 429 server for the shortage class, a dead port for
// the failure class).
func TestBackendContract(t *testing.T) {
	srv := llamatest.Start(t, llamatest.Options{Slots: 4, CtxSize: 4 * 4096})
	build := func(t *testing.T, url string, opts map[string]string) backends.Backend {
		o := map[string]string{OptServer: "llamacpp", OptModelNames + ".tiny": llamatest.Alias, OptMetricsInterval: "100ms"}
		for k, v := range opts {
			o[k] = v
		}
		b, err := New(backends.Spec{Pool: "contract", Endpoints: []string{url}, MaxConcurrent: 8, Options: o}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	backendtest.Run(t, backendtest.Harness{
		New:           func(t *testing.T) backends.Backend { return build(t, srv.URL, nil) },
		Model:         "tiny",
		LongMaxTokens: 4000,
		Broken: func(t *testing.T) backends.Backend {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			url := "http://" + lis.Addr().String()
			_ = lis.Close()
			return build(t, url, map[string]string{OptMetrics: "off"})
		},
		Full: func(t *testing.T) backends.Backend {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
			})
			return build(t, f.URL, map[string]string{OptMetrics: "off"})
		},
		ClientFault: &pb.GenerateRequest{Model: "tiny", Prompt: strings.Repeat("overflow ", 6000), MaxTokens: 4},
	})
}
