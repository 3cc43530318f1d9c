package cli

import (
	"context"
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
		Action: func(c *ucli.Context) error { return runReport(c, parseDiff) },
	}
}

func parseDiff(c *ucli.Context) (*reportRun[history.Diff], error) {
	var paths []string
	switch dir := c.String("history"); {
	case dir != "" && c.NArg() > 0:
		return nil, usageErr("diff takes either OLD.json NEW.json or --history DIR, not both (got %q)", c.Args().First())
	case dir != "":
		if n := c.Int("last"); n < 2 {
			return nil, usageErr("--last %d must be at least 2", n)
		}
		last, err := history.LastOfKind(dir, c.String("kind"), c.Int("last"))
		if err != nil {
			return nil, usageErr("--history %q: %v", dir, err)
		}
		paths = []string{last[0], last[len(last)-1]}
	case c.NArg() != 2:
		return nil, usageErr("diff needs OLD.json and NEW.json (got %d argument(s)), or --history DIR --last 2", c.NArg())
	default:
		paths = c.Args().Slice()
	}
	var snaps [2]history.Snapshot
	for i, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, usageErr("cannot read %q: %v", p, unwrapPathErr(err))
		}
		s, err := history.Parse(data)
		if err != nil {
			return nil, usageErr("%s: %v", p, err)
		}
		snaps[i] = s
	}
	if snaps[0].Kind != snaps[1].Kind {
		return nil, usageErr("cannot compare a %s report (%s) with a %s report (%s)", snaps[0].Kind, paths[0], snaps[1].Kind, paths[1])
	}
	return &reportRun[history.Diff]{
		formats: []string{"text", "json"},
		run: func(context.Context) (history.Diff, error) {
			d := history.Compare(snaps[0], snaps[1])
			d.Old.Path, d.New.Path = paths[0], paths[1]
			return d, nil
		},
		write: jsonOrText(history.WriteDiffJSON, history.WriteDiffText),
		outcome: func(_ context.Context, d history.Diff) error {
			if d.Material {
				return findingsErr("material change")
			}
			return nil
		},
	}, nil
}
