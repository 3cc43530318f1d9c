package cli

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/hopcheck/hopcheck/history"
	"github.com/hopcheck/hopcheck/tcpcheck"
)

// Flag groups: each set of flags that several commands share is declared
// once here, next to the function that reads it.

// outputFlags: --format and -o, on every command that writes a report (and
// before the command name, where they have always been accepted).
func outputFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "format", Value: "auto", Usage: "output format: text|json; run and demo also markdown|html (auto: text)"},
		&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the report to `FILE` (atomically)"},
	}
}

// familyFlags: -4 and -6, read by familyFromFlags.
func familyFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.BoolFlag{Name: "ipv4", Aliases: []string{"4"}, Usage: "IPv4 addresses only"},
		&ucli.BoolFlag{Name: "ipv6", Aliases: []string{"6"}, Usage: "IPv6 addresses only"},
	}
}

// familyFromFlags reads -4/-6: 4, 6, or 0 for both.
func familyFromFlags(c *ucli.Context) (int, error) {
	switch {
	case c.Bool("ipv4") && c.Bool("ipv6"):
		return 0, usageErr("-4 and -6 exclude each other")
	case c.Bool("ipv4"):
		return 4, nil
	case c.Bool("ipv6"):
		return 6, nil
	}
	return 0, nil
}

// privilegeFlag: --privilege, read by privilegeFromFlags.
func privilegeFlag() ucli.Flag {
	return &ucli.StringFlag{Name: "privilege", Value: "auto", Usage: "auto|raw|unprivileged"}
}

// privilegeFromFlags reads --privilege (run, trace, serve).
func privilegeFromFlags(c *ucli.Context) (string, error) {
	switch pv := c.String("privilege"); pv {
	case "auto", "raw", "unprivileged":
		return pv, nil
	default:
		return "", usageErr("unknown --privilege %q (want auto, raw or unprivileged)", pv)
	}
}

// vhostSource says where a command finds the AMQP virtual host when
// --amqp-vhost is not given.
type vhostSource int

const (
	vhostFlagOnly   vhostSource = iota // tcp, soak: only the flag
	vhostFromWhoami                    // run, serve: whoami.xml of an https:// target
)

// dialFlags: --ca-file, --insecure, --token-file and --amqp-vhost, read by
// dialConfigFromFlags.
func dialFlags(vhost vhostSource) []ucli.Flag {
	vhostUsage := "AMQP virtual host to log in to with the token (UOF: /unifiedfeed/BOOKMAKER_ID); without it AMQP connections stop after Connection.Start"
	if vhost == vhostFromWhoami {
		vhostUsage = "AMQP virtual host to log in to with the token (UOF: /unifiedfeed/BOOKMAKER_ID); default: virtual_host of whoami.xml from an https:// target of the run; without it AMQP connections stop after Connection.Start"
	}
	return []ucli.Flag{
		&ucli.StringFlag{Name: "ca-file", Usage: "PEM CA certificates to trust instead of the system roots"},
		&ucli.BoolFlag{Name: "insecure", Usage: "do not verify server certificates"},
		&ucli.StringFlag{Name: "tls-profile", Value: string(tcpcheck.DefaultTLSProfile), Usage: "TLS ClientHello to send: java (the UOF Java SDK's, a few hundred bytes), dotnet (the .NET SDK's, the same size), go (Go's own, about 1.5 KB with a post-quantum key share)"},
		&ucli.StringFlag{Name: "token-file", Usage: "file holding the x-access-token (else $UOF_ACCESS_TOKEN); never printed"},
		&ucli.StringFlag{Name: "amqp-vhost", Usage: vhostUsage},
	}
}

// dialConfigFromFlags reads --ca-file, --insecure, --amqp-vhost and
// --token-file (or $UOF_ACCESS_TOKEN). The token's content is never
// echoed.
func dialConfigFromFlags(c *ucli.Context) (tcpcheck.DialConfig, error) {
	d := tcpcheck.DefaultDialConfig()
	d.Insecure = c.Bool("insecure")
	profile, err := tcpcheck.ParseTLSProfile(c.String("tls-profile"))
	if err != nil {
		return d, usageErr("--tls-profile %q: %v", c.String("tls-profile"), err)
	}
	d.TLSProfile = profile
	if c.IsSet("amqp-vhost") {
		d.AMQPVHost = c.String("amqp-vhost")
		if err := tcpcheck.CheckAMQPVHost(d.AMQPVHost); err != nil {
			return d, usageErr("--amqp-vhost %q: %v", d.AMQPVHost, err)
		}
	}
	if f := c.String("ca-file"); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return d, usageErr("--ca-file %q: %v", f, unwrapPathErr(err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return d, usageErr("--ca-file %q holds no PEM certificate", f)
		}
		d.RootCAs = pool
	}
	if f := c.String("token-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return d, usageErr("--token-file %q: %v", f, unwrapPathErr(err))
		}
		d.Token = strings.TrimSpace(string(b))
		if d.Token == "" || strings.ContainsAny(d.Token, "\r\n") {
			return d, usageErr("--token-file %q must hold one non-empty line", f)
		}
		return d, nil
	}
	d.Token = strings.TrimSpace(os.Getenv("UOF_ACCESS_TOKEN"))
	if strings.ContainsAny(d.Token, "\r\n") {
		return d, usageErr("$UOF_ACCESS_TOKEN must be one line")
	}
	return d, nil
}

// checkHTTPPath checks an HTTP request path flag (--path, --data-path).
func checkHTTPPath(flag, path string) error {
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n") {
		return usageErr("--%s %q must start with / and contain no spaces", flag, path)
	}
	return nil
}

// storeFlags: --history, --keep, --keep-age and --metrics-file (run, soak),
// read by storeFromFlags.
func storeFlags(kind string) []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "history", Usage: "also save the JSON report, timestamped, into `DIR` (for hopcheck diff --history)"},
		&ucli.IntFlag{Name: "keep", Usage: "with --history: keep the newest N " + kind + " reports (0: all)"},
		&ucli.DurationFlag{Name: "keep-age", Usage: "with --history: remove " + kind + " reports older than this"},
		&ucli.StringFlag{Name: "metrics-file", Usage: "write node_exporter textfile metrics to `FILE` (*.prom, atomically)"},
	}
}

// storeOptions say where a finished report is kept besides the output:
// history directory (with retention) and metrics file.
type storeOptions struct {
	History     string
	Keep        history.Retention
	KeepSet     bool // --keep or --keep-age given
	MetricsFile string
}

func storeFromFlags(c *ucli.Context) (storeOptions, error) {
	s := storeOptions{History: c.String("history"), Keep: history.Retention{Keep: c.Int("keep"), MaxAge: c.Duration("keep-age")},
		KeepSet: c.IsSet("keep") || c.IsSet("keep-age"), MetricsFile: c.String("metrics-file")}
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s, s.prepare()
}

// Validate checks the values alone (no file system).
func (s storeOptions) Validate() error {
	switch {
	case s.Keep.Keep < 0:
		return usageErr("--keep %d must not be negative", s.Keep.Keep)
	case s.Keep.MaxAge < 0:
		return usageErr("--keep-age %v must not be negative", s.Keep.MaxAge)
	case s.KeepSet && s.History == "":
		return usageErr("--keep and --keep-age need --history DIR")
	case s.MetricsFile != "" && !strings.HasSuffix(s.MetricsFile, ".prom"):
		return usageErr("--metrics-file %q must end in .prom (node_exporter's textfile collector reads only those)", s.MetricsFile)
	}
	return nil
}

// prepare creates the history directory and checks that the metrics
// file's directory exists, so that a long run does not find out at its end.
func (s storeOptions) prepare() error {
	if s.History != "" {
		if err := os.MkdirAll(s.History, 0o755); err != nil {
			return usageErr("--history %q: %v", s.History, unwrapPathErr(err))
		}
	}
	if s.MetricsFile != "" {
		if st, err := os.Stat(filepath.Dir(s.MetricsFile)); err != nil || !st.IsDir() {
			return usageErr("--metrics-file %q: directory %q does not exist", s.MetricsFile, filepath.Dir(s.MetricsFile))
		}
	}
	return nil
}

// save keeps rep in the history directory and writes its metrics; both
// only warn on failure (the report itself is already written).
func (s storeOptions) save(c *ucli.Context, kind string, rep any, writeMetrics func(path string) error) {
	if s.History != "" {
		if _, err := history.Save(s.History, kind, rep, time.Now(), s.Keep); err != nil {
			warnf(c, "--history: %v", err)
		}
	}
	if s.MetricsFile != "" && writeMetrics != nil {
		if err := writeMetrics(s.MetricsFile); err != nil {
			warnf(c, "--metrics-file: %v", err)
		}
	}
}
