package grpcx

import "time"

// SetReloadCheck shortens the reload check for a test.
func SetReloadCheck(d time.Duration) (restore func()) {
	prev := reloadCheck
	reloadCheck = d
	return func() { reloadCheck = prev }
}
