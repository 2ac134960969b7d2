package web

import (
	"fmt"
	"sync"

	"cel.dev/cel-go/cel"
)

// filterEnv is the CEL environment endpoint filters are written in: one
// dynamic variable, event (the webhooks processor compiles filters in the
// same environment). The portal compiles a filter before saving it, so a
// typo is an error on the form, not every event dead-lettered as a
// filter failure later.
var filterEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(cel.Variable("event", cel.DynType))
})

// checkFilter reports why expr is not a usable endpoint filter ("" is: no filter).
func checkFilter(expr string) error {
	if expr == "" {
		return nil
	}
	if len(expr) > 2000 {
		return fmt.Errorf("%w: the filter is longer than 2000 characters", ErrInvalid)
	}
	env, err := filterEnv()
	if err != nil {
		return err
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return fmt.Errorf("%w: filter %q does not compile (write it over the variable event, e.g. event.data.amount > 100.0): %v",
			ErrInvalid, expr, iss.Err())
	}
	if t := ast.OutputType(); t != cel.BoolType && t != cel.DynType {
		return fmt.Errorf("%w: filter %q returns %v, want true or false", ErrInvalid, expr, t)
	}
	return nil
}
