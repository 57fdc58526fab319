package router_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
)

// recvErr receives from a stream until an error, sending it on the returned
// channel (io.EOF included).
func recvErr[T any](recv func() (*T, error)) <-chan error {
	out := make(chan error, 1)
	go func() {
		for {
			if _, err := recv(); err != nil {
				out <- err
				return
			}
		}
	}()
	return out
}

// TestRevokedCredentialsEndTheirStreams is the outside probe's revoked
// token (2026-12-02): a WatchEvents stream opened with an admin token went
// on delivering events, with actor names, 11 s after the reload that removed
// the token. Now a reload that removes a token or key ends every stream it
// authorized within 1 s: WatchEvents with UNAUTHENTICATED, a token demoted
// to no role likewise, and a streamed completion with UNAUTHENTICATED;
// streams of credentials the reload kept go on.
func TestRevokedCredentialsEndTheirStreams(t *testing.T) {
	pools := []*simPool{{name: "aws-use1", cloud: "aws", region: "us-east-1", accel: "h100", limit: 4, timeScale: 1}}
	for _, p := range pools {
		startSimPool(t, p)
	}
	const keep, gone = "key-keep", "key-gone"
	withCreds := func(tokens, keys []string) *config.Fleet {
		y := fleetYAML(pools) + "admin:\n  tokens:\n"
		for _, tok := range tokens {
			y += "    - {name: " + tok + ", role: viewer, sha256: " + router.HashToken(tok) + "}\n"
		}
		y += "tenants:\n  - name: acme\n    api_key_sha256: ["
		for i, k := range keys {
			if i > 0 {
				y += ", "
			}
			y += router.HashToken(k)
		}
		y += "]\n"
		f, err := config.Parse([]byte(y), "revoke fleet")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	r := startReplica(t, withCreds([]string{"tok-keep", "tok-gone"}, []string{keep, gone}), nil, nil)
	ctx := ctxT(t, 30*time.Second)

	watch := func(tok string) <-chan error {
		w, err := r.admin.WatchEvents(bearer(ctx, tok), &pb.WatchEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := w.Recv(); err != nil || ev.GetKind() != "hello" {
			t.Fatalf("watch %s: %v %v", tok, ev, err)
		}
		return recvErr(w.Recv)
	}
	keptWatch, goneWatch := watch("tok-keep"), watch("tok-gone")

	// A long stream per key (time scale 1: 200 tokens take seconds).
	completion := func(key string) <-chan error {
		s, err := r.inf.GenerateStream(metadata.AppendToOutgoingContext(ctx, "x-api-key", key), req("us-east-1", 200))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatalf("stream with %s: %v", key, err)
		}
		return recvErr(s.Recv)
	}
	keptStream, goneStream := completion(keep), completion(gone)

	if err := r.rt.Reload(withCreds([]string{"tok-keep"}, []string{keep})); err != nil {
		t.Fatal(err)
	}
	reloaded := time.Now()
	for name, ch := range map[string]<-chan error{"WatchEvents": goneWatch, "GenerateStream": goneStream} {
		select {
		case err := <-ch:
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s with the removed credential ended with %v, want UNAUTHENTICATED", name, err)
			}
			t.Logf("%s with the removed credential ended %s after the reload: %v", name, time.Since(reloaded).Round(time.Millisecond), err)
		case <-time.After(time.Second - time.Since(reloaded)):
			t.Fatalf("%s with the removed credential still open 1s after the reload", name)
		}
	}
	// The kept ones go on: the completion runs to its end, the watch stays.
	select {
	case err := <-keptStream:
		if err.Error() != "EOF" {
			t.Fatalf("stream with the kept key: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("stream with the kept key never ended")
	}
	select {
	case err := <-keptWatch:
		t.Fatalf("WatchEvents with the kept token ended: %v", err)
	default:
	}
	// New calls with the removed credentials are refused as before.
	if _, err := r.admin.ListPools(bearer(ctx, "tok-gone"), &pb.ListPoolsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListPools with the removed token: %v", err)
	}
}
