package main

import "github.com/spf13/cobra"

// addWebhooks adds the webhooks processor to rt. (Issue 4 fills this in.)
func addWebhooks(rt *runtime) error { return nil }

// webhookToolCmds are `partners events publish` and `partners dlq`. (Issue 4.)
func (a *app) webhookToolCmds() []*cobra.Command { return nil }
