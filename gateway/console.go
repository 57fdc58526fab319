package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/router/console"
)

// consoleOn says whether --console-listen asks for the operator console.
func consoleOn(f *flags) bool { return f.consoleListen != "" && f.consoleListen != "off" }

// startConsole serves the operator web console on --console-listen (with
// the gRPC listener's TLS settings) and returns the function that stops it.
func (p *process) startConsole() (func(), error) {
	f, rt, tel, log, stdout, serveErr := p.f, p.rt, p.tel, p.log, p.stdout, p.serveErr
	if !consoleOn(f) {
		return func() {}, nil
	}
	tlsCfg, err := tlsConfig(f)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", f.consoleListen)
	if err != nil {
		return nil, fmt.Errorf("--console-listen %s: %w", f.consoleListen, err)
	}
	opts := console.Options{Operator: rt.Operator(), Logger: log, AllowedHosts: consoleHosts(f.consoleHosts, f.consoleListen, lis.Addr())}
	if tel.Registry != nil {
		opts.Gatherer = tel.Registry
	}
	c, err := console.New(opts)
	if err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("--console-allowed-hosts: %w", err)
	}
	elis := console.NewListener(lis)
	lis = elis
	scheme := "http"
	if tlsCfg != nil {
		lis, scheme = tls.NewListener(lis, tlsCfg), "https"
	}
	srv := console.NewHTTPServer(c.Handler(), log)
	srv.ConnContext = elis.ConnContext
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("console: %w", err)
		}
	}()
	url := scheme + "://" + lis.Addr().String() + "/"
	log.Info("operator console serving", "url", url)
	fmt.Fprintf(stdout, "switchyard console on %s\n", url)
	return func() {
		c.Close() // ends live streams
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}, nil
}

// consoleHosts is the console's Host allow-list: the --console-allowed-hosts
// entries, plus the host of --console-listen with the port it listens on when
// that host is a name (addresses the connection arrives on are always
// allowed).
func consoleHosts(flag, listen string, bound net.Addr) []string {
	hosts := strings.Split(flag, ",")
	host, _, err := net.SplitHostPort(listen)
	_, port, perr := net.SplitHostPort(bound.String())
	if err == nil && perr == nil && host != "" {
		hosts = append(hosts, net.JoinHostPort(host, port))
	}
	return hosts
}
