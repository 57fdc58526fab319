package redistest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// LatencyProxy is a real fault injector (Shopify's toxiproxy, run in the
// test process) between a client and a server: a TCP proxy on a free
// loopback port that adds latency to every byte in each direction. It
// stands for a store in another region.
type LatencyProxy struct {
	proxy *toxiproxy.Proxy
}

// StartLatencyProxy proxies 127.0.0.1:free -> upstream, adding each way
// (upstream and downstream) the given latency. Stopped by t.Cleanup.
func StartLatencyProxy(t testing.TB, upstream string, each time.Duration) *LatencyProxy {
	t.Helper()
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(server, "store", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	for _, stream := range []string{"upstream", "downstream"} {
		toxic := fmt.Sprintf(`{"name":"latency_%s","type":"latency","stream":%q,"attributes":{"latency":%d}}`, stream, stream, each.Milliseconds())
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
			t.Fatalf("toxiproxy latency toxic: %v", err)
		}
	}
	return &LatencyProxy{proxy: p}
}

// Addr is the proxy's host:port.
func (l *LatencyProxy) Addr() string { return l.proxy.Listen }

// URL is a redis:// URL through the proxy.
func (l *LatencyProxy) URL() string { return "redis://" + l.Addr() + "/0" }
