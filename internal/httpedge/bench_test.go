package httpedge_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
)

// BenchmarkHandler is Handler's cost on a request with a small body read to
// its end, against the bare handler in the same run.
func BenchmarkHandler(b *testing.B) {
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	})
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"edge", httpedge.Handler(bare)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
				c.h.ServeHTTP(httptest.NewRecorder(), r)
			}
		})
	}
}
