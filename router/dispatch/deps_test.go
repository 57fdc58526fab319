package dispatch

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNoWire holds the core to being transport-neutral: nothing it
// imports, directly or not, is gRPC, protobuf or net/http.
func TestImportsNoWire(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages: %q", len(deps), deps)
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "google.golang.org/grpc") || strings.HasPrefix(d, "google.golang.org/protobuf") ||
			d == "net/http" || strings.HasPrefix(d, "github.com/switchyard-dev/switchyard/proto") {
			t.Errorf("router/dispatch depends on %s", d)
		}
	}
}
