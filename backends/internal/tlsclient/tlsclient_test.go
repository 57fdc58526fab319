package tlsclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// writePair writes a self-signed certificate and its key as PEM files.
func writePair(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pool.test"}, DNSNames: []string{"pool.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir)
	c, err := Config(FromOptions(map[string]string{OptCAFile: cert, OptCertFile: cert, OptKeyFile: key, OptServerName: "pool.test"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS12 || c.ServerName != "pool.test" || c.RootCAs == nil || len(c.Certificates) != 1 {
		t.Fatalf("config %+v: want TLS 1.2+, the server name, the CA and the client certificate", c)
	}
	if c, err := Config(Files{}); err != nil || c.RootCAs != nil || c.Certificates != nil {
		t.Fatalf("no options: %+v %v, want the system roots and no client certificate", c, err)
	}
	if (Files{}).Set() || !(Files{ServerName: "x"}).Set() {
		t.Fatal("Set")
	}

	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("secret-looking content"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    Files
		want string
	}{
		{Files{CAFile: filepath.Join(dir, "missing.pem")}, "option tls.ca_file: open "},
		{Files{CAFile: notPEM}, "option tls.ca_file: " + notPEM + " holds no PEM certificate"},
		{Files{CertFile: cert}, "options tls.cert_file and tls.key_file go together"},
		{Files{KeyFile: key}, "options tls.cert_file and tls.key_file go together"},
		{Files{CertFile: cert, KeyFile: notPEM}, "options tls.cert_file/tls.key_file: "},
	} {
		_, err := Config(tc.f)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "secret-looking") {
			t.Errorf("Config(%+v) = %v, want an error starting %q that does not quote the file", tc.f, err, tc.want)
		}
	}
}
