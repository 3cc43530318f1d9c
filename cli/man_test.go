//go:build !urfave_cli_no_docs

package cli

import (
	"io"
	"os"
	"testing"

	ucli "github.com/urfave/cli/v2"
)

// TestManPageIsCurrent: the embedded manual page is what urfave/cli
// renders from the command definitions now, from within `hopcheck man`
// as the command did before the page was embedded (running a command adds
// its help flag and subcommand to the definitions). After changing a
// command or flag, rewrite it with
//
//	HOPCHECK_UPDATE_MAN=1 go test ./cli -run TestManPageIsCurrent
func TestManPageIsCurrent(t *testing.T) {
	var page string
	var renderErr error
	app := newApp(io.Discard, io.Discard)
	for _, cmd := range app.Commands {
		if cmd.Name == "man" {
			cmd.Action = func(c *ucli.Context) error {
				page, renderErr = c.App.ToManWithSection(1)
				return nil
			}
		}
	}
	if err := app.Run([]string{"hopcheck", "man"}); err != nil || renderErr != nil {
		t.Fatalf("render the manual page: %v, %v", err, renderErr)
	}
	if os.Getenv("HOPCHECK_UPDATE_MAN") != "" {
		if err := os.WriteFile("hopcheck.1", []byte(page), 0o644); err != nil {
			t.Fatalf("rewrite hopcheck.1: %v", err)
		}
		return
	}
	if page != manPage {
		t.Errorf("cli/hopcheck.1 is stale (%d bytes, rendered %d): run HOPCHECK_UPDATE_MAN=1 go test ./cli -run TestManPageIsCurrent", len(manPage), len(page))
	}
}
