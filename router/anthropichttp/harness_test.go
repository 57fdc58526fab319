package anthropichttp_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/switchyard-dev/switchyard/backends"
	openaiadapter "github.com/switchyard-dev/switchyard/backends/openai"
	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	"github.com/switchyard-dev/switchyard/backends/sim"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/anthropichttp"
	"github.com/switchyard-dev/switchyard/router/config"
)

// door is a real router (the demo fleet's simulated pools, or fleetYAML)
// behind the Messages front door on a loopback port.
type door struct {
	rt     *router.Server
	host   *sim.Host
	url    string
	client *http.Client
}

func startDoor(t *testing.T, fleetYAML string, timeScale float64) *door {
	t.Helper()
	src := config.DemoYAML()
	if fleetYAML != "" {
		src = []byte(fleetYAML)
	}
	fleet, err := config.Parse(src, "test fleet")
	if err != nil {
		t.Fatal(err)
	}
	if timeScale == 0 {
		timeScale = 50
	}
	host := sim.NewHost()
	reg := backends.NewRegistry()
	sim.Register(reg, sim.RegistryOptions{Host: host, TimeScale: timeScale, QueueLength: fleet.Sim.QueueLength})
	openaiadapter.Register(reg, openaiadapter.Options{Logger: slog.New(slog.DiscardHandler)})
	rt, err := router.New(router.Options{Fleet: fleet, Backends: reg, Replica: "anthropic-test", UsageRefresh: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h, err := anthropichttp.New(anthropichttp.Options{Router: rt, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tr := &http.Transport{}
	d := &door{rt: rt, host: host, url: "http://" + lis.Addr().String(), client: &http.Client{Transport: tr}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		_ = rt.Close()
	})
	return d
}

func (d *door) sdk(opts ...option.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]option.RequestOption{
		option.WithBaseURL(d.url + "/"), option.WithAPIKey("unused"), option.WithHTTPClient(d.client), option.WithMaxRetries(0),
	}, opts...)...)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// llamaFleet is one real llama-server pool serving "tiny".
func llamaFleet(srv *llamatest.Server) string {
	var b strings.Builder
	b.WriteString("models:\n  - {name: tiny, max_input_tokens: 400, max_output_tokens: 64}\npools:\n")
	fmt.Fprintf(&b, "  - {name: llama, cloud: aws, region: us-east-1, accelerator: cpu, models: [tiny], adapter: openai, endpoints: [%q], limits: {max_concurrent: 2}, options: {server: llamacpp, model_names: {tiny: %s}, metrics: \"off\"}}\n", srv.URL, llamatest.Alias)
	return b.String()
}

func demoYAML() []byte { return config.DemoYAML() }

func hashToken(k string) string { return router.HashToken(k) }
