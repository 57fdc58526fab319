package gateway

import (
	"fmt"
	"os"
	"strings"

	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
)

// envAdminTokens is the operator token SWITCHYARD_ADMIN_TOKEN holds (none
// when it is unset), refused when it is a known placeholder.
func envAdminTokens() ([]config.AdminToken, error) {
	tok := os.Getenv("SWITCHYARD_ADMIN_TOKEN")
	if tok == "" {
		return nil, nil
	}
	if err := checkAdminToken(tok); err != nil {
		return nil, err
	}
	return []config.AdminToken{{Name: "env:SWITCHYARD_ADMIN_TOKEN", Role: "operator", SHA256: router.HashToken(tok)}}, nil
}

// placeholderTokens are admin tokens that shipped as examples or placeholders
// somewhere (manifests, docs): a router refuses to start with one, since
// anyone who read them would hold the operator role.
var placeholderTokens = []string{"replace-me", "changeme", "change-me", "placeholder", "example", "secret", "token", "admin"}

// checkAdminToken refuses SWITCHYARD_ADMIN_TOKEN values that are known
// placeholders (any token containing "REPLACE-ME", or equal to one of
// placeholderTokens, case-insensitively).
func checkAdminToken(tok string) error {
	l := strings.ToLower(strings.TrimSpace(tok))
	if strings.Contains(l, "replace-me") {
		return fmt.Errorf("SWITCHYARD_ADMIN_TOKEN is a placeholder (%q...): create the token with e.g. openssl rand -hex 32 (docs/security.md)", tok[:min(len(tok), 10)])
	}
	for _, p := range placeholderTokens {
		if l == p {
			return fmt.Errorf("SWITCHYARD_ADMIN_TOKEN is the placeholder %q: create the token with e.g. openssl rand -hex 32 (docs/security.md)", p)
		}
	}
	return nil
}
