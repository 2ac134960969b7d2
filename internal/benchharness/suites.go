package main

import (
	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/edge/authz"
	"github.com/partners-engine/partners-engine/processors/webhooks"
)

// suites lists every benchmark suite of the project, in run order.
func suites() []suite {
	return []suite{
		{name: "xds", run: xds.Bench},
		{name: "edge", run: authz.Bench},
		{name: "webhooks", run: webhooks.Bench},
	}
}
