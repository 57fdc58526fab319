package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc"

	"github.com/switchyard-dev/switchyard/backends/sim"
	"github.com/switchyard-dev/switchyard/internal/hostname"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/grpcedge"
)

// simControlOptions are what serveSimControl needs from the process.
type simControlOptions struct {
	// Listen is --sim-control-listen ("" or "off": not served).
	Listen string
	// Creds are the TLS server options from --tls-cert (nil: plaintext).
	Creds []grpc.ServerOption
	Host  *sim.Host
	// Router authorizes operator tokens when the listener is not loopback.
	Router *router.Server
	Log    *slog.Logger
}

// serveSimControl serves switchyard.v1.SimControl (fault injection into the
// simulated pools) on its own listener, never on the client port.
//
// The rule: a loopback address (127.0.0.0/8, ::1, localhost) is served as
// is — whoever can reach it already runs on the router's host. Any other
// address needs TLS (--tls-cert) and every call then needs an admin token
// with the operator role ("authorization: Bearer ..."). It returns the bound
// address and a stop function; with Listen empty or "off" it does nothing.
func serveSimControl(o simControlOptions, serveErr chan<- error) (addr string, stop func(), err error) {
	if o.Listen == "" || o.Listen == "off" {
		return "", func() {}, nil
	}
	loopback, err := isLoopback(o.Listen)
	if err != nil {
		return "", nil, fmt.Errorf("--sim-control-listen: %w", err)
	}
	opts := append([]grpc.ServerOption(nil), o.Creds...)
	if !loopback {
		if len(o.Creds) == 0 {
			return "", nil, fmt.Errorf("--sim-control-listen %s is not a loopback address: fault injection off the host needs --tls-cert (and then an operator admin token on every call)", o.Listen)
		}
		unary, stream := grpcedge.OperatorInterceptors(o.Router.Operator(), o.Log)
		opts = append(opts, grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	}
	lis, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return "", nil, fmt.Errorf("--sim-control-listen %s: %w", o.Listen, err)
	}
	gs := grpc.NewServer(opts...)
	pb.RegisterSimControlServer(gs, o.Host)
	go func() {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			serveErr <- fmt.Errorf("sim control: %w", err)
		}
	}()
	o.Log.Info("sim control serving", "listen", lis.Addr().String(), "loopback", loopback, "pools", len(o.Host.Pools()))
	return lis.Addr().String(), gs.Stop, nil
}

// isLoopback reports whether host:port names a loopback address only
// (hostname.ThisMachineOnly; an empty host or 0.0.0.0 listens on every
// interface: not loopback).
func isLoopback(hostport string) (bool, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false, err
	}
	return hostname.ThisMachineOnly(host), nil
}
