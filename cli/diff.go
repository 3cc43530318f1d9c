package cli

import (
	"errors"
	"os"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/history"
)

func diffCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "diff",
		Usage:     "compare two reports (run, tcp, trace, soak): hops, RTT/loss, findings and rates that changed; exit 1 on a material change",
		ArgsUsage: "OLD.json NEW.json   (or --history DIR --last 2)",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "history", Usage: "compare the newest reports saved in `DIR` (by run/soak --history)"},
			&ucli.IntFlag{Name: "last", Value: 2, Usage: "with --history: compare the oldest and newest of the last N reports"},
			&ucli.StringFlag{Name: "kind", Usage: "with --history: only reports of this kind (run, soak)"},
		},
		Action: runDiff,
	}
}

func runDiff(c *ucli.Context) error {
	var paths []string
	switch dir := c.String("history"); {
	case dir != "" && c.NArg() > 0:
		return usageErr("diff takes either OLD.json NEW.json or --history DIR, not both (got %q)", c.Args().First())
	case dir != "":
		if n := c.Int("last"); n < 2 {
			return usageErr("--last %d must be at least 2", n)
		}
		last, err := history.LastOfKind(dir, c.String("kind"), c.Int("last"))
		if err != nil {
			return usageErr("--history %q: %v", dir, err)
		}
		paths = []string{last[0], last[len(last)-1]}
	case c.NArg() != 2:
		return usageErr("diff needs OLD.json and NEW.json (got %d argument(s)), or --history DIR --last 2", c.NArg())
	default:
		paths = c.Args().Slice()
	}
	var snaps [2]history.Snapshot
	for i, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return usageErr("cannot read %q: %v", p, unwrapPathErr(err))
		}
		s, err := history.Parse(data)
		if err != nil {
			return usageErr("%s: %v", p, err)
		}
		snaps[i] = s
	}
	if snaps[0].Kind != snaps[1].Kind {
		return usageErr("cannot compare a %s report (%s) with a %s report (%s)", snaps[0].Kind, paths[0], snaps[1].Kind, paths[1])
	}
	out, err := openOutput(c, "text", "json")
	if err != nil {
		return err
	}
	defer out.abort()
	d := history.Compare(snaps[0], snaps[1])
	d.Old.Path, d.New.Path = paths[0], paths[1]
	if out.format == "json" {
		err = history.WriteDiffJSON(out.w, d)
	} else {
		err = history.WriteDiffText(out.w, d)
	}
	if err != nil {
		return cantRunErr("write diff: %v", err)
	}
	if err := out.commit(); err != nil {
		return err
	}
	if d.Material {
		return &exitError{code: ExitFindings, err: errors.New("material change")}
	}
	return nil
}
