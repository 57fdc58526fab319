package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// One chart sample (a gather of the router's registry turned into rates)
// against its baseline: one Prometheus scrape of the same registry.
func BenchmarkChartSample(b *testing.B) {
	f := newFixture(b, fixtureOptions{})
	b.Run("prometheus_scrape", func(b *testing.B) {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		for b.Loop() {
			w := httptest.NewRecorder()
			f.tel.Handler.ServeHTTP(w, req)
		}
	})
	b.Run("console_sample", func(b *testing.B) {
		now := time.Now()
		for b.Loop() {
			now = now.Add(2 * time.Second)
			f.console.SampleOnce(now)
		}
	})
}

// The fleet as the page gets it (HTTP + JSON) against its baseline: the
// same ListPools over gRPC on loopback, as switchyardctl calls it.
func BenchmarkFleet(b *testing.B) {
	f := newFixture(b, fixtureOptions{})
	b.Run("grpc_listpools", func(b *testing.B) {
		cl := pb.NewAdminClient(f.grpc)
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+viewerToken)
		for b.Loop() {
			if _, err := cl.ListPools(ctx, &pb.ListPoolsRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("console_fleet", func(b *testing.B) {
		req, _ := http.NewRequest(http.MethodGet, f.url+"/api/v1/fleet", nil)
		req.Header.Set("Authorization", "Bearer "+viewerToken)
		for b.Loop() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatal(resp.Status)
			}
		}
	})
}
