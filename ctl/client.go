package ctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/internal/hostname"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// tokenEnv names the environment variable holding the admin bearer token.
const tokenEnv = "SWITCHYARD_ADMIN_TOKEN"

// globals are the flags every command accepts, before or after its name.
type globals struct {
	addr               string
	tokenFile          string
	json               bool
	timeout            time.Duration
	tls                bool
	tlsCA              string
	tlsCert            string
	tlsKey             string
	insecureSkipVerify bool
	insecure           bool
}

func (g *globals) defaults() {
	g.addr = "127.0.0.1:50051"
	g.timeout = 5 * time.Second
}

// register adds the global flags to fs with the values parsed so far as
// defaults, so parsing them again after the command keeps earlier ones.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "router address host:port")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "file holding the admin bearer token (default: $"+tokenEnv+")")
	fs.BoolVar(&g.json, "json", g.json, "machine output: the response as protojson (watch: one JSON object per line)")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline of each call")
	fs.BoolVar(&g.tls, "tls", g.tls, "connect with TLS (implied by the other --tls-* flags)")
	fs.StringVar(&g.tlsCA, "tls-ca", g.tlsCA, "verify the router's certificate with this CA (PEM) instead of the system roots")
	fs.StringVar(&g.tlsCert, "tls-cert", g.tlsCert, "client certificate (PEM), for routers that require one")
	fs.StringVar(&g.tlsKey, "tls-key", g.tlsKey, "private key for --tls-cert (PEM)")
	fs.BoolVar(&g.insecureSkipVerify, "insecure-skip-verify", g.insecureSkipVerify, "TLS without verifying the router's certificate (testing only)")
	fs.BoolVar(&g.insecure, "insecure", g.insecure, "allow sending the admin token in plaintext to a non-loopback --addr (without it, such an address needs --tls)")
}

func (g *globals) validate() error {
	if g.addr == "" {
		return usagef("", "--addr is empty")
	}
	if g.timeout <= 0 {
		return usagef("", "--timeout must be positive, got %s", g.timeout)
	}
	if (g.tlsCert == "") != (g.tlsKey == "") {
		return usagef("", "--tls-cert and --tls-key go together")
	}
	return nil
}

func (g *globals) useTLS() bool {
	return g.tls || g.tlsCA != "" || g.tlsCert != "" || g.insecureSkipVerify
}

// plaintextCheck refuses to send the token without TLS to an address off
// this host, unless --insecure.
func (g *globals) plaintextCheck() error {
	if g.useTLS() || g.insecure || loopbackTarget(g.addr) {
		return nil
	}
	return fmt.Errorf("refusing to send the admin token in plaintext to %s, which is not a loopback address: use --tls (with --tls-ca for a private CA), or --insecure to send it anyway", g.addr)
}

// loopbackTarget reports whether a gRPC target names this host only
// (hostname.ThisMachineOnly: localhost or a loopback IP), with or without a
// dns:/// or passthrough:/// scheme. Names are not resolved.
func loopbackTarget(target string) bool {
	for _, scheme := range []string{"dns:///", "passthrough:///", "dns:"} {
		target = strings.TrimPrefix(target, scheme)
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	return hostname.ThisMachineOnly(host)
}

// cli is one invocation: flags, output and, once dialled, the connection.
type cli struct {
	g      globals
	env    environment
	stdout io.Writer
	stderr io.Writer

	conn  *grpc.ClientConn
	admin pb.AdminClient
	token string
}

func (c *cli) close() {
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// connect reads the token and sets up the connection to the router (gRPC
// dials lazily: an unreachable router shows in the first call). Commands call
// it after checking their arguments, so usage errors need no token.
func (c *cli) connect() error {
	if c.admin != nil {
		return nil
	}
	if err := c.g.plaintextCheck(); err != nil {
		return err
	}
	tok, err := c.readToken()
	if err != nil {
		return err
	}
	creds, err := c.transportCreds()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(c.g.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("router address %q: %w", c.g.addr, err)
	}
	c.conn, c.admin, c.token = conn, pb.NewAdminClient(conn), tok
	return nil
}

func (c *cli) readToken() (string, error) {
	if c.g.tokenFile != "" {
		b, err := os.ReadFile(c.g.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("--token-file %s is empty", c.g.tokenFile)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(c.env.getenv(tokenEnv)); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("no admin token: set %s or --token-file", tokenEnv)
}

func (c *cli) transportCreds() (credentials.TransportCredentials, error) {
	if !c.g.useTLS() {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.g.insecureSkipVerify} //nolint:gosec // opt-in flag
	if c.g.tlsCA != "" {
		pem, err := os.ReadFile(c.g.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate found", c.g.tlsCA)
		}
		cfg.RootCAs = pool
	}
	if c.g.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.g.tlsCert, c.g.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

// authed returns ctx carrying the bearer token.
func (c *cli) authed(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

// call runs one unary Admin call with the bearer token and --timeout, and
// turns its failure into an operator-facing error.
func call[Req, Resp any](ctx context.Context, c *cli, fn func(pb.AdminClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var zero Resp
	if err := c.connect(); err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(c.authed(ctx), c.g.timeout)
	defer cancel()
	resp, err := fn(c.admin, ctx, req)
	if err != nil {
		return zero, c.rpcError(err)
	}
	return resp, nil
}

// rpcError carries an operator-facing message and the gRPC status behind it.
type rpcError struct {
	msg string
	err error
}

func (e *rpcError) Error() string { return e.msg }
func (e *rpcError) Unwrap() error { return e.err }

// rpcError maps a failed Admin call to a one-line message naming the problem.
func (c *cli) rpcError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	desc := st.Message()
	var msg string
	switch st.Code() {
	case codes.Unavailable:
		msg = fmt.Sprintf("cannot reach router at %s: %s", c.g.addr, dialDetail(desc))
	case codes.DeadlineExceeded:
		if c.conn != nil && c.conn.GetState() != connectivity.Ready {
			msg = fmt.Sprintf("cannot reach router at %s: no connection within %s (connection %s)", c.g.addr, c.g.timeout, strings.ToLower(c.conn.GetState().String()))
		} else {
			msg = fmt.Sprintf("router at %s did not answer within %s (raise --timeout): %s", c.g.addr, c.g.timeout, desc)
		}
	case codes.Unauthenticated:
		msg = fmt.Sprintf("authentication failed: %s (set %s or --token-file)", strings.TrimPrefix(desc, "unauthenticated: "), tokenEnv)
	case codes.PermissionDenied:
		msg = "permission denied: " + strings.TrimPrefix(desc, "permission denied: ")
	case codes.NotFound:
		msg = strings.ReplaceAll(desc, "(see ListPools)", "(see 'switchyardctl pools')")
	case codes.FailedPrecondition:
		msg = "refused: " + strings.TrimPrefix(desc, "refused: ")
	case codes.InvalidArgument:
		msg = desc
	case codes.Unimplemented:
		msg = fmt.Sprintf("the server at %s does not serve switchyard.v1.Admin: %s", c.g.addr, desc)
	case codes.Canceled:
		msg = "canceled"
	default:
		msg = fmt.Sprintf("%s: %s", strings.ToLower(strings.ReplaceAll(st.Code().String(), "_", " ")), desc)
	}
	return &rpcError{msg: msg, err: err}
}

// printJSON writes m as one protojson document (indented) or, with oneLine,
// as a single line.
func (c *cli) printJSON(m proto.Message, oneLine bool) error {
	opts := protojson.MarshalOptions{EmitUnpopulated: true}
	if !oneLine {
		opts.Multiline, opts.Indent = true, "  "
	}
	b, err := opts.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	if _, err := fmt.Fprintf(c.stdout, "%s\n", b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// dialDetail shortens gRPC's transport error text to its cause, e.g.
// "dial tcp 127.0.0.1:1: connect: connection refused".
func dialDetail(desc string) string {
	for _, marker := range []string{"Error while dialing: ", "authentication handshake failed: "} {
		if _, after, ok := strings.Cut(desc, marker); ok {
			return strings.TrimSuffix(after, "\"")
		}
	}
	return desc
}
