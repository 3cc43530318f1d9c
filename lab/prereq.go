package lab

import (
	"fmt"
	"os"
	"os/exec"
)

// Missing returns why a lab cannot be built on this machine, or "" if it
// can. It lives here, not in lab/labtest, so that `hopcheck demo` can ask
// without linking the testing package into the shipped binary.
func Missing() string {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Sprintf("lab tests need root (euid is %d)", uid)
	}
	for _, tool := range []string{"ip", "nft", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("lab tests need %s: %v", tool, err)
		}
	}
	return ""
}
