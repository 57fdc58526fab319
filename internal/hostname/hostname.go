// Package hostname compares the host part of HTTP Host and Origin headers:
// the operator console's Host allow-list and the HTTP front door's Origin and
// Host checks (both DNS-rebinding defences) share it. A leaf: it imports
// nothing of switchyard's.
package hostname

import (
	"net/netip"
	"strings"
)

// Normal is h for comparison: lower case, no trailing dot, an IP address in
// its canonical form (an IPv4-mapped IPv6 address as IPv4).
func Normal(h string) string {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().String()
	}
	return h
}

// Loopback are the names of this machine a browser may use for a local
// server, in Normal form.
var Loopback = []string{"localhost", "127.0.0.1", "::1"}

// IsLoopback says whether h (any form) is one of Loopback.
func IsLoopback(h string) bool {
	h = Normal(h)
	for _, n := range Loopback {
		if h == n {
			return true
		}
	}
	return false
}
