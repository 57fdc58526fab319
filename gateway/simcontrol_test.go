package gateway

import (
	"bufio"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// startWithSimControl runs the router with --sim-control-listen on a free
// loopback port and returns the client port and the sim control address.
func startWithSimControl(t *testing.T) (addr, simAddr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Run(ctx, []string{"--listen", "127.0.0.1:0", "--log-level", "warn", "--metrics-listen", "off", "--sim-control-listen", "127.0.0.1:0", "--http-listen", "off"}, pw, io.Discard)
		pw.Close()
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	simRe, addrRe := regexp.MustCompile(`sim control on (\S+)`), regexp.MustCompile(`listening on (\S+)`)
	sc := bufio.NewScanner(pr)
	for addr == "" && sc.Scan() {
		if m := simRe.FindStringSubmatch(sc.Text()); m != nil {
			simAddr = m[1]
		}
		if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if addr == "" || simAddr == "" {
		t.Fatalf("router did not start with sim control (addr %q, sim %q)", addr, simAddr)
	}
	return addr, simAddr
}

// SimControl is never served on the client port: by default nowhere, with
// --sim-control-listen only on that (loopback) address.
func TestSimControlNeverOnClientPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fault := &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: "aws-use1-h100", Outage: true}}

	addr, _ := startRouter(t)
	_, err := pb.NewSimControlClient(dial(t, addr)).InjectFault(ctx, fault)
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("InjectFault on the client port (default flags): %v, want UNIMPLEMENTED", err)
	}

	addr, simAddr := startWithSimControl(t)
	_, err = pb.NewSimControlClient(dial(t, addr)).InjectFault(ctx, fault)
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("InjectFault on the client port with --sim-control-listen: %v, want UNIMPLEMENTED", err)
	}
	sim := pb.NewSimControlClient(dial(t, simAddr))
	if _, err := sim.InjectFault(ctx, fault); err != nil {
		t.Fatalf("InjectFault on --sim-control-listen: %v", err)
	}
	if _, err := sim.ClearFaults(ctx, &pb.ClearFaultsRequest{}); err != nil {
		t.Fatalf("ClearFaults: %v", err)
	}
}

// A non-loopback sim control address without TLS is refused at start.
func TestSimControlOffHostNeedsTLS(t *testing.T) {
	err := Run(context.Background(), []string{"--listen", "127.0.0.1:0", "--metrics-listen", "off", "--log-level", "error", "--sim-control-listen", "0.0.0.0:0"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("Run with a wildcard sim control address and no TLS: %v, want a refusal naming --tls-cert", err)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:1", true}, {"127.9.9.9:1", true}, {"[::1]:1", true}, {"localhost:1", true},
		{"0.0.0.0:1", false}, {":1", false}, {"[::]:1", false}, {"10.0.0.1:1", false}, {"example.com:1", false},
	} {
		got, err := isLoopback(tc.addr)
		if err != nil || got != tc.want {
			t.Errorf("isLoopback(%q) = %v, %v; want %v", tc.addr, got, err, tc.want)
		}
	}
	if _, err := isLoopback("no-port"); err == nil {
		t.Error("isLoopback without a port: no error")
	}
}

// A placeholder admin token (as manifests used to ship) stops the router at
// start instead of granting the operator role to whoever read it.
func TestPlaceholderAdminTokenRefused(t *testing.T) {
	for _, tok := range []string{"REPLACE-ME-with-a-random-token", "changeme", "Placeholder"} {
		t.Setenv("SWITCHYARD_ADMIN_TOKEN", tok)
		err := Run(context.Background(), []string{"--listen", "127.0.0.1:0", "--metrics-listen", "off", "--log-level", "error"}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "placeholder") {
			t.Errorf("SWITCHYARD_ADMIN_TOKEN=%q: Run returned %v, want a refusal", tok, err)
		}
	}
	if err := checkAdminToken("8f3e0c1b9a7d4e2f6a5b3c1d0e9f8a7b"); err != nil {
		t.Errorf("a random token: %v", err)
	}
}
