package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShippedBinaryLinksNoTestCode: the main package must not depend on the
// testing package (test helpers such as lab/labtest, or a dependency that
// ships fuzz targets outside _test.go files, would link it into the binary
// users install).
func TestShippedBinaryLinksNoTestCode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", "github.com/hopcheck/hopcheck").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages; want the whole dependency tree", len(deps))
	}
	for _, d := range deps {
		if d == "testing" || strings.HasSuffix(d, "/labtest") {
			t.Errorf("the hopcheck binary links %s (go list -deps . | grep -x testing)", d)
		}
	}
}
