package router_test

import (
	"os/exec"
	"strings"
	"testing"
)

// goList runs go list with args in this directory.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, out)
	}
	return strings.Fields(string(out))
}

// Package router speaks no wire: none of its files imports gRPC (it reads
// its backends' statuses through router/internal/grpccode, the gRPC table
// it shares with the gRPC edge) or net/http, and it imports no edge.
func TestRouterImportsNoWire(t *testing.T) {
	imports := goList(t, "-f", `{{join .Imports " "}}`, ".")
	if len(imports) < 10 {
		t.Fatalf("go list found %d imports: %q", len(imports), imports)
	}
	for _, p := range imports {
		if strings.HasPrefix(p, "google.golang.org/grpc") || p == "net/http" || isEdge(p) {
			t.Errorf("router imports %s", p)
		}
	}
}

// edges are the router's edge packages.
var edges = []string{"grpcedge", "openaihttp", "anthropichttp", "console"}

func isEdge(pkg string) bool {
	for _, e := range edges {
		if pkg == "github.com/switchyard-dev/switchyard/router/"+e {
			return true
		}
	}
	return false
}

// No edge depends on another: each maps the core's errors to its own wire.
func TestNoEdgeImportsAnother(t *testing.T) {
	for _, e := range edges {
		self := "github.com/switchyard-dev/switchyard/router/" + e
		deps := goList(t, "-deps", "./"+e)
		if len(deps) < 10 {
			t.Fatalf("go list -deps ./%s listed %d packages", e, len(deps))
		}
		for _, d := range deps {
			if d != self && isEdge(d) {
				t.Errorf("%s depends on %s", e, d)
			}
		}
	}
}
