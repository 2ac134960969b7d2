package main

import (
	"github.com/partners-engine/partners-engine/processors/webhooks"
)

// suites lists every benchmark suite of the project, in run order.
func suites() []suite {
	return []suite{
		{name: "webhooks", run: webhooks.Bench},
	}
}
