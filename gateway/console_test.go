package gateway

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startWithConsole runs the router with the console on a free port and
// returns the console's URL.
func startWithConsole(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Run(ctx, append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "off", "--console-listen", "127.0.0.1:0", "--http-listen", "off", "--log-level", "warn"}, args...), pw, io.Discard)
		pw.Close()
		done <- err
	}()
	re := regexp.MustCompile(`switchyard console on (\S+)`)
	sc := bufio.NewScanner(pr)
	url := ""
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			url = m[1]
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if url == "" {
		cancel()
		t.Fatalf("console did not start: %v", <-done)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	return url
}

func TestConsoleServedOnItsListener(t *testing.T) {
	t.Setenv("SWITCHYARD_ADMIN_TOKEN", "console-token")
	url := startWithConsole(t)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("page: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ := http.NewRequest(http.MethodGet, url+"api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer console-token")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != `{"role":"operator"}` {
		t.Fatalf("whoami: %d %s", resp.StatusCode, b)
	}
	// Charts are on even with --metrics-listen off.
	req, _ = http.NewRequest(http.MethodGet, url+"api/v1/history", nil)
	req.Header.Set("Authorization", "Bearer console-token")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"enabled":true`) {
		t.Fatalf("history: %s", b)
	}
}

func TestConsoleUsesTheTLSFlags(t *testing.T) {
	cert, key, pool := selfSigned(t)
	url := startWithConsole(t, "--tls-cert", cert, "--tls-key", key)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("console URL %s, want https", url)
	}
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}, Timeout: 10 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("page over TLS: %d", resp.StatusCode)
	}
	// Plain HTTP is not served.
	plain := strings.Replace(url, "https://", "http://", 1)
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(plain); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("console answered plain HTTP with TLS configured")
		}
	}
}

func TestConsoleListenErrors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	err = Run(context.Background(), []string{"--listen", "127.0.0.1:0", "--metrics-listen", "off", "--console-listen", lis.Addr().String()}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--console-listen") {
		t.Fatalf("want a --console-listen error for a taken port, got %v", err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key; it returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (string, string, *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := errors.Join(
		os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600),
		os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600),
	); err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return cert, key, pool
}

// TestConsoleAllowedHostsFlag: --console-allowed-hosts adds names the
// console answers to; any other Host header gets 421; a malformed entry stops
// the router at start.
func TestConsoleAllowedHostsFlag(t *testing.T) {
	t.Setenv("SWITCHYARD_ADMIN_TOKEN", "console-token")
	url := startWithConsole(t, "--console-allowed-hosts", "console.test, ops.test:8443")
	_, port, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
	for host, want := range map[string]int{
		"console.test:" + port: http.StatusOK,
		"ops.test:8443":        http.StatusOK,
		"localhost:" + port:    http.StatusOK,
		"ops.test:" + port:     http.StatusMisdirectedRequest,
		"rebind.test:" + port:  http.StatusMisdirectedRequest,
	} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Run(ctx, []string{"--listen", "127.0.0.1:0", "--metrics-listen", "off", "--console-listen", "127.0.0.1:0", "--http-listen", "off",
		"--console-allowed-hosts", "https://console.test/"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--console-allowed-hosts") {
		t.Fatalf("a URL as an allowed host: %v, want an error naming the flag", err)
	}
}
