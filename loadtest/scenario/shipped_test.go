package scenario

import (
	"path/filepath"
	"testing"
)

// Every scenario shipped in loadtest/scenarios must stay valid.
func TestShippedScenariosAreValid(t *testing.T) {
	files, err := filepath.Glob("../scenarios/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no shipped scenarios found under loadtest/scenarios")
	}
	for _, f := range files {
		sc, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(sc.Steps) == 0 {
			t.Errorf("%s: no steps", f)
		}
	}
}
