package tcpcheck

import "fmt"

// Policy is how hard hopcheck may load the targets of one command. Toward
// Sportradar (*.betradar.com) it is bounded by the service's rules: more
// than MaxBetradarConns connections from one client block new ones, and a
// client that opens connections too fast looks like an attack. Every
// command (tcp, soak, run, serve) takes its limits from here, so that the
// rules live in one place.
type Policy struct {
	// Sportradar is set when any target is below betradar.com.
	Sportradar bool
	// MaxConns is the most connections one command may hold at once, all
	// addresses together.
	MaxConns int
	// MaxConnectRate is the fastest `tcp connect` may open connections, per
	// second (0: no limit).
	MaxConnectRate float64
	// MaxRequestRate is the fastest a soak may send requests, per second
	// and address.
	MaxRequestRate float64
	// FreshReserve is how many of MaxConns a soak keeps for its fresh
	// connections; its pools share the rest.
	FreshReserve int
	// RunConns is the connection budget of `hopcheck run` (and serve's
	// probes): the idle ladder of every address together.
	RunConns int
	// OneRunAtATime: serve runs diagnoses toward these targets one at a
	// time (two at once would hold twice RunConns).
	OneRunAtATime bool
}

// Limits of the tool itself, whatever the target.
const (
	maxConnsAnywhere       = 1000
	maxRequestRateAnywhere = 1000
	runConnsAnywhere       = 24
)

// PolicyFor returns the policy for a command's targets: Sportradar's if any
// target is below betradar.com.
func PolicyFor(targets []Target) Policy {
	for _, t := range targets {
		if IsBetradar(t.Spec.Host) {
			return Policy{Sportradar: true, MaxConns: MaxBetradarConns, MaxConnectRate: 20,
				MaxRequestRate: 10, FreshReserve: 4, RunConns: MaxBetradarConns - 4, OneRunAtATime: true}
		}
	}
	return Policy{MaxConns: maxConnsAnywhere, MaxRequestRate: maxRequestRateAnywhere, RunConns: runConnsAnywhere}
}

// PolicyForJobs is PolicyFor over the targets of resolved jobs.
func PolicyForJobs(jobs []Job) Policy {
	targets := make([]Target, len(jobs))
	for i, j := range jobs {
		targets[i] = j.Target
	}
	return PolicyFor(targets)
}

// PoolTooLargeError says that the soak pools cannot fit the connection
// budget toward Sportradar.
type PoolTooLargeError struct {
	Pool, Addrs, MaxConns int
}

func (e *PoolTooLargeError) Error() string {
	return fmt.Sprintf("--pool %d × %d addresses toward *.betradar.com exceeds %d connections; lower --pool or name fewer targets", e.Pool, e.Addrs, e.MaxConns)
}

// FitSoakPool fits the soak pool per address to the connection budget
// (MaxConns less FreshReserve) shared by addrs addresses. CDN names resolve
// to many addresses, so a default pool is shared out (at least 2 per
// address); a pool the user chose is never changed, only refused.
func (p Policy) FitSoakPool(pool, addrs int, explicit bool) (int, error) {
	budget := p.MaxConns - p.FreshReserve
	if addrs*pool <= budget {
		return pool, nil
	}
	if fit := budget / max(addrs, 1); !explicit && fit >= 2 {
		return fit, nil
	}
	return 0, &PoolTooLargeError{Pool: pool, Addrs: addrs, MaxConns: p.MaxConns}
}
