package cli

import (
	_ "embed"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	ucli "github.com/urfave/cli/v2"
)

// Commit is set at build time with -ldflags "-X ...cli.Commit=..."; without
// it, the VCS revision Go stamped into the binary (if any) is shown.
var Commit = ""

func init() {
	ucli.VersionPrinter = func(c *ucli.Context) { printVersion(c.App.Writer) }
}

// buildInfo is what --version prints: version, commit and Go version.
type buildInfo struct {
	Version, Commit, GoVersion, Platform string
}

func currentBuild() buildInfo {
	b := buildInfo{Version: Version, Commit: Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b = fillFromBuildInfo(b, bi)
	}
	return b
}

// fillFromBuildInfo completes b from the binary's build information: the
// module version of `go install …@vX`, the VCS revision of a build in a
// checkout, the Go version the binary was built with.
func fillFromBuildInfo(b buildInfo, bi *debug.BuildInfo) buildInfo {
	if bi.GoVersion != "" {
		b.GoVersion = bi.GoVersion
	}
	if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version
	}
	if b.Commit == "" {
		rev, modified := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" && modified {
			rev += "-dirty"
		}
		b.Commit = rev
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

func printVersion(w io.Writer) {
	b := currentBuild()
	fmt.Fprintf(w, "hopcheck %s\ncommit %s\n%s %s\n", b.Version, b.Commit, b.GoVersion, b.Platform)
}

// completionScripts are sourced by bash and zsh; both ask the binary for
// the words that may follow (urfave/cli's --generate-bash-completion), so
// they follow the command definitions without being regenerated.
var completionScripts = map[string]string{
	"bash": `# bash completion for hopcheck (hopcheck completion bash)
_hopcheck() {
  local cur words
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  if [[ "$cur" == -* ]]; then
    words+=("$cur")
  fi
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "$("${words[0]}" "${words[@]:1}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
  return 0
}
complete -o bashdefault -o default -F _hopcheck hopcheck
`,
	"zsh": `#compdef hopcheck
# zsh completion for hopcheck (hopcheck completion zsh)
_hopcheck() {
  local -a opts
  local cur=${words[CURRENT]}
  local -a prefix=(${words[1,CURRENT-1]})
  if [[ "$cur" == -* ]]; then
    prefix+=("$cur")
  fi
  opts=("${(@f)$(${prefix[@]} --generate-bash-completion 2>/dev/null)}")
  if [[ -n "${opts[1]}" ]]; then
    _describe 'hopcheck' opts
  else
    _files
  fi
}
if [[ "$funcstack[1]" == "_hopcheck" ]]; then
  _hopcheck "$@"
else
  compdef _hopcheck hopcheck
fi
`,
}

func completionCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script: bash or zsh",
		ArgsUsage: "bash|zsh   (bash: source <(hopcheck completion bash); zsh: hopcheck completion zsh > \"${fpath[1]}/_hopcheck\")",
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 {
				return usageErr("completion needs one shell: bash or zsh (got %d argument(s))", c.NArg())
			}
			script, ok := completionScripts[c.Args().First()]
			if !ok {
				return usageErr("unknown shell %q for completion (want bash or zsh)", c.Args().First())
			}
			_, err := io.WriteString(c.App.Writer, script)
			return err
		},
	}
}

// manPage is the manual page (roff, section 1) that urfave/cli renders
// from the command definitions (App.ToManWithSection(1)), rendered at
// build time rather than at run time: TestManPageIsCurrent fails when it
// is stale and rewrites it with HOPCHECK_UPDATE_MAN=1. Embedding it lets
// the binary be built with -tags urfave_cli_no_docs (see the Makefile),
// which leaves urfave/cli's markdown and roff renderers (go-md2man,
// blackfriday) out: their package initialisation cost every command about
// 0.7 ms of start-up, a single trace included.
//
//go:embed hopcheck.1
var manPage string

func manCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "man",
		Usage: "print the manual page (roff, section 1), generated from the command definitions",
		Action: func(c *ucli.Context) error {
			if c.NArg() > 0 {
				return usageErr("man takes no arguments (got %q)", c.Args().First())
			}
			_, err := io.WriteString(c.App.Writer, manPage)
			return err
		},
	}
}
