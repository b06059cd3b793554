// Package kerneltest decides whether a test that needs the real kernel
// (root, network namespaces, iptables) can run, and what to do when it
// cannot: under CI a missing prerequisite is a failure with a clear
// message, on a developer's machine the test is skipped with the reason.
package kerneltest

import (
	"os"
	"os/exec"
	"testing"
)

// Require checks that the process is root and that every tool in tools is
// on PATH ("ip" and "iptables" are the usual ones). When something is
// missing it fails t if the CI environment variable is set, and skips it
// otherwise.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "must run as root (network namespaces and iptables need CAP_NET_ADMIN)"
	}
	for _, tool := range tools {
		if why != "" {
			break
		}
		if _, err := exec.LookPath(tool); err != nil {
			why = tool + " is not installed (make test installs it: scripts/deps.sh)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("kernel test cannot run under CI: %s", why)
	}
	t.Skipf("kernel test skipped: %s", why)
}
