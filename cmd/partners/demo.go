package main

import "github.com/spf13/cobra"

// demoCmds is `partners demo`. (Issue 6.)
func (a *app) demoCmds() []*cobra.Command { return nil }
