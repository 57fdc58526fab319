package grpcnative

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// testPKI is a throw-away CA with a server certificate (SAN "backend.internal"
// and 127.0.0.1) and a client certificate, written as PEM files.
type testPKI struct {
	dir                            string
	ca, serverCert, serverKey      string
	clientCert, clientKey, otherCA string
	caPool                         *x509.CertPool
	server                         tls.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{dir: dir}
	caKey, caDER := selfSigned(t, "test ca")
	ca, _ := x509.ParseCertificate(caDER)
	p.ca = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	_, otherDER := selfSigned(t, "other ca")
	p.otherCA = writePEM(t, dir, "other-ca.pem", "CERTIFICATE", otherDER)
	issue := func(name string, server bool) (certFile, keyFile string, kp tls.Certificate) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
		if server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.DNSNames = []string{"backend.internal"}
		} else {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		certFile = writePEM(t, dir, name+".pem", "CERTIFICATE", der)
		keyFile = writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", kder)
		kp, err = tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile, kp
	}
	p.serverCert, p.serverKey, p.server = issue("server", true)
	p.clientCert, p.clientKey, _ = issue("client", false)
	return p
}

func selfSigned(t *testing.T, cn string) (*ecdsa.PrivateKey, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startTLSBackend serves a simulated pool over TLS on loopback, requiring
// client certificates from the CA when mtls is set.
func startTLSBackend(t *testing.T, p *testPKI, mtls bool) string {
	t.Helper()
	sp, err := sim.NewPool(sim.Options{Name: "p", Accelerator: "h100", MaxBatch: 4, TimeScale: 100})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
	if mtls {
		cfg.ClientCAs, cfg.ClientAuth = p.caPool, tls.RequireAndVerifyClientCert
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	pb.RegisterInferenceServer(gs, sim.NewInferenceServer(sp))
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); _ = sp.Close() })
	return lis.Addr().String()
}

// Backend links over TLS and mutual TLS per pool: the CA, the client
// certificate and the name to verify come from the pool's tls.* options; a
// link that cannot prove both ends fails, and plaintext (the adapter's only
// mode before) cannot talk to a TLS backend at all.
func TestTLSAndMutualTLSLinks(t *testing.T) {
	p := newPKI(t)
	mtlsAddr := startTLSBackend(t, p, true)
	tlsAddr := startTLSBackend(t, p, false)
	full := map[string]string{OptTLSCAFile: p.ca, OptTLSCertFile: p.clientCert, OptTLSKeyFile: p.clientKey, OptTLSServerName: "backend.internal"}
	without := func(keys ...string) map[string]string {
		o := map[string]string{}
		for k, v := range full {
			o[k] = v
		}
		for _, k := range keys {
			delete(o, k)
		}
		return o
	}
	with := func(k, v string) map[string]string { o := without(); o[k] = v; return o }
	for _, tc := range []struct {
		name string
		addr string
		opts map[string]string
		ok   bool
	}{
		{"mtls", mtlsAddr, full, true},
		{"tls, server-only auth", tlsAddr, without(OptTLSCertFile, OptTLSKeyFile), true},
		{"mtls backend, no client certificate", mtlsAddr, without(OptTLSCertFile, OptTLSKeyFile), false},
		{"plaintext to a tls backend", tlsAddr, nil, false},
		{"another CA", mtlsAddr, with(OptTLSCAFile, p.otherCA), false},
		{"system roots only", tlsAddr, map[string]string{OptTLS: "true", OptTLSServerName: "backend.internal"}, false},
		{"name not in the certificate", mtlsAddr, with(OptTLSServerName, "other.internal"), false},
		{"no server name: the endpoint's IP is not in the certificate", mtlsAddr, without(OptTLSServerName), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(backends.Spec{Pool: "p", Endpoints: []string{tc.addr}, Options: tc.opts}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = b.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 2})
			if tc.ok && err != nil {
				t.Fatalf("generate: %v", err)
			}
			if !tc.ok && status.Code(err) != codes.Unavailable {
				t.Fatalf("generate: %v, want UNAVAILABLE (handshake refused)", err)
			}
		})
	}
}

// Bad TLS options fail when the pool is built (start or reload), naming the option.
func TestTLSOptionsValidated(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"tls.ca": p.ca}, `unknown option "tls.ca"`},
		{map[string]string{OptTLSCertFile: p.clientCert}, "tls.cert_file and tls.key_file go together"},
		{map[string]string{OptTLSCAFile: filepath.Join(p.dir, "missing.pem")}, "tls.ca_file"},
		{map[string]string{OptTLSCAFile: p.clientKey}, "holds no PEM certificate"},
		{map[string]string{OptTLS: "maybe"}, "tls.enabled"},
		{map[string]string{OptTLS: "false", OptTLSCAFile: p.ca}, "tls.enabled is false but"},
		{map[string]string{OptTLSCertFile: p.clientCert, OptTLSKeyFile: p.serverKey}, "tls.cert_file/tls.key_file"},
	} {
		err := Validate(backends.Spec{Pool: "p", Endpoints: []string{"10.0.0.1:50051"}, Options: tc.opts})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.opts, err, tc.want)
		}
		if _, err := New(backends.Spec{Pool: "p", Endpoints: []string{"10.0.0.1:50051"}, Options: tc.opts}, Options{}); err == nil {
			t.Errorf("%v: New accepted what Validate refused", tc.opts)
		}
	}
	if err := Validate(backends.Spec{Pool: "p", Endpoints: []string{"backend.internal:50051"}, Options: map[string]string{OptTLSCAFile: p.ca}}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}
