// Package tri is the tri-state result of a check: a check that did not
// run ("not-tested") differs from one that found nothing ("no"). It is a
// leaf package so that the probes and every report that holds their
// results can share it without import cycles.
package tri

// State is yes, no or not-tested; "" means unknown (a report written
// before the field existed).
type State string

// The states.
const (
	Yes       State = "yes"
	No        State = "no"
	NotTested State = "not-tested"
)

// Of is Yes for true and No for false: a check that ran.
func Of(found bool) State {
	if found {
		return Yes
	}
	return No
}
