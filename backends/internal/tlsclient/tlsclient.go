// Package tlsclient builds a pool's TLS client configuration from its tls.*
// options: the one builder the adapters share (grpcnative, openai), so a CA
// bundle, a client certificate and a server name mean the same everywhere
// and errors name the same options.
package tlsclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// The pool options Config reads, as the fleet file spells them.
const (
	OptCAFile     = "tls.ca_file"     // PEM CA bundle instead of the system roots
	OptCertFile   = "tls.cert_file"   // client certificate (PEM), with tls.key_file
	OptKeyFile    = "tls.key_file"    // client key (PEM)
	OptServerName = "tls.server_name" // name to verify instead of the endpoint's host
)

// Files are a pool's TLS options (empty: unset).
type Files struct {
	CAFile, CertFile, KeyFile, ServerName string
}

// Set reports whether any option is set.
func (f Files) Set() bool { return f != Files{} }

// FromOptions reads the tls.* options from a pool's adapter options.
func FromOptions(o map[string]string) Files {
	return Files{CAFile: o[OptCAFile], CertFile: o[OptCertFile], KeyFile: o[OptKeyFile], ServerName: o[OptServerName]}
}

// Config is a TLS 1.2+ client configuration: the roots of CAFile (else the
// system's), the client certificate of CertFile and KeyFile (both or
// neither, for mutual TLS), ServerName verified instead of the dialled host.
// Errors name the option and the file, never a file's content.
func Config(f Files) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("option %s: %w", OptCAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("option %s: %s holds no PEM certificate", OptCAFile, f.CAFile)
		}
		c.RootCAs = pool
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, fmt.Errorf("options %s and %s go together", OptCertFile, OptKeyFile)
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("options %s/%s: %w", OptCertFile, OptKeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
