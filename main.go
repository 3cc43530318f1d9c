// Command hopcheck finds the hop (or the server) that resets or silently
// drops TCP connections toward a service, and says what to change.
package main

import (
	"os"

	"github.com/hopcheck/hopcheck/cli"
)

func main() {
	os.Exit(cli.Main(os.Args, os.Stdout, os.Stderr))
}
