package anthropichttp_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	"github.com/switchyard-dev/switchyard/backends/sim"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/anthropichttp"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

// door is a real router (the demo fleet's simulated pools, or fleetYAML)
// behind the Messages front door on a loopback port.
type door struct {
	rt     *router.Server
	host   *sim.Host
	url    string
	client *http.Client
}

// startDoor starts the router (routertest.Start) and serves the Messages
// front door in front of it (routertest.ServeHTTP).
func startDoor(t *testing.T, fleetYAML string, timeScale float64) *door {
	t.Helper()
	r := routertest.Start(t, routertest.Options{FleetYAML: fleetYAML, TimeScale: timeScale, Router: router.Options{Replica: "anthropic-test"}})
	h, err := anthropichttp.New(anthropichttp.Options{Router: r.Server, Logger: routertest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	web := routertest.ServeHTTP(t, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, routertest.Listen(t))
	return &door{rt: r.Server, host: r.Host, url: web.URL, client: web.Client}
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
