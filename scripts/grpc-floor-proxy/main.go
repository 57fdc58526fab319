// Command grpc-floor-proxy is the smallest useful grpc-go proxy: it forwards
// every unary call, bytes untouched, to one backend and does nothing else.
// scripts/bench-proxy.sh runs it next to nginx and switchyard so the table
// shows the floor any grpc-go proxy pays on the machine (grpc-go's server and
// client transports, their goroutines and syscalls) in the same run, and what
// switchyard adds on top of that floor. It uses the HTTP/2 window sizes
// switchyard uses on its client port and backend links.
//
//	grpc-floor-proxy --listen 127.0.0.1:9000 --backend 127.0.0.1:9001
//
// Benchmark tool only: no TLS, no auth, no limits, no streaming calls.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// rawCodec passes message bytes through without decoding them. Its name is
// "proto" so peers see the usual content type.
type rawCodec struct{}

var _ encoding.CodecV2 = rawCodec{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

const (
	streamWindow = 1 << 20 // as the router (gateway): fixed windows, no BDP ping
	connWindow   = 4 << 20
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "grpc-floor-proxy:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("grpc-floor-proxy", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve on")
	backend := fs.String("backend", "", "backend address (host:port)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *backend == "" {
		return errors.New("--backend is required")
	}
	cc, err := grpc.NewClient(*backend,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow))
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	defer cc.Close()
	forward := func(_ any, ss grpc.ServerStream) error {
		method, ok := grpc.MethodFromServerStream(ss)
		if !ok {
			return errors.New("no method")
		}
		var in, out []byte
		if err := ss.RecvMsg(&in); err != nil {
			return err
		}
		if err := cc.Invoke(ss.Context(), method, &in, &out); err != nil {
			return err
		}
		return ss.SendMsg(&out)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(forward),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow))
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
