// Package hostname compares the host part of HTTP Host and Origin headers:
// the operator console's Host allow-list and the HTTP front door's Origin and
// Host checks (both DNS-rebinding defences) share it. It also holds the one
// rule for "this address reaches this machine only" (ThisMachineOnly) that
// listeners and clients check. A leaf: it imports nothing of switchyard's.
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

// IsLoopback says whether h (any form) is one of Loopback: the names a
// browser uses for this machine, matched exactly (127.0.0.2 is not one; see
// ThisMachineOnly for addresses).
func IsLoopback(h string) bool {
	h = Normal(h)
	for _, n := range Loopback {
		if h == n {
			return true
		}
	}
	return false
}

// ThisMachineOnly says whether host, the host part of a listen address or a
// dial target (brackets allowed), reaches this machine only: localhost (any
// case, a trailing dot allowed) or a loopback IP (127.0.0.0/8, ::1, an
// IPv4-mapped loopback). Wildcards (0.0.0.0, ::, empty) and other names are
// not: names are never resolved.
func ThisMachineOnly(host string) bool {
	h := Normal(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}
