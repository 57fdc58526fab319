package console

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/switchyard-dev/switchyard/internal/hostname"
)

// maxHostEntry bounds one allowed-host entry (a DNS name is at most 253
// bytes, plus ":port").
const maxHostEntry = 260

// hostRule is one allowed Host: a lower-case name or IP address, and a port
// ("" for any port).
type hostRule struct {
	host string
	port string
}

// hostAllowList decides which Host headers the console answers to: the
// address the connection arrived on, localhost, 127.0.0.1 and [::1] with
// the port it arrived on, and the configured names. Anything else is a
// request the browser addressed to another name — a DNS-rebinding attack,
// where a page's own domain is made to resolve to the console's address — and
// is refused with 421 before any handler runs. Read-only once built.
type hostAllowList struct {
	rules []hostRule
}

// newHostAllowList parses entries: "name", "name:port", an IP address, or
// "[IPv6]:port". A name without a port is allowed on any port.
func newHostAllowList(entries []string) (*hostAllowList, error) {
	al := &hostAllowList{}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if len(e) > maxHostEntry || strings.ContainsAny(e, "/@?#* \t") {
			return nil, fmt.Errorf("allowed host %.64q: want a host name or address, optionally with :port (no scheme, path or wildcard)", e)
		}
		host, port, err := net.SplitHostPort(e)
		if err != nil {
			// No port: a bare name, IPv4 address, or IPv6 address with or
			// without brackets.
			host, port = strings.TrimSuffix(strings.TrimPrefix(e, "["), "]"), ""
		} else if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || n == 0 {
			return nil, fmt.Errorf("allowed host %.64q: port must be 1..65535", e)
		}
		if host == "" {
			return nil, fmt.Errorf("allowed host %.64q: the host is empty", e)
		}
		al.rules = append(al.rules, hostRule{host: hostname.Normal(host), port: port})
	}
	return al, nil
}

// errHostNotAllowed is why check refused a request.
var errHostNotAllowed = errors.New("host not allowed")

// check says whether r's Host is one the console answers to.
func (al *hostAllowList) check(r *http.Request) error {
	if r.Host == "" {
		return fmt.Errorf("%w: the request names no Host", errHostNotAllowed)
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(r.Host, "["), "]"), ""
	}
	if port == "" { // the scheme's default port
		port = "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	host = hostname.Normal(host)
	// The connection's own address, and the loopback names, on its port.
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil && port == strconv.Itoa(int(ap.Port())) {
			if host == ap.Addr().Unmap().String() {
				return nil
			}
			if hostname.IsLoopback(host) {
				return nil
			}
		}
	}
	for _, rule := range al.rules {
		if host == rule.host && (rule.port == "" || rule.port == port) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", errHostNotAllowed, quoteHost(r.Host))
}

// quoteHost quotes a client-sent Host for an error, cut to 64 bytes.
func quoteHost(h string) string {
	if len(h) > 64 {
		return fmt.Sprintf("%q… (%d bytes)", h[:64], len(h))
	}
	return fmt.Sprintf("%q", h)
}
