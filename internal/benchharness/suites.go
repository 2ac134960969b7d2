package main

import (
	"github.com/partners-engine/partners-engine/control-plane/registry"
)

// suites lists every benchmark suite of the project, in run order.
func suites() []suite {
	return []suite{
		{name: "registry", run: registry.Bench},
	}
}
