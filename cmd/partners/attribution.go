package main

import "github.com/spf13/cobra"

// addAttribution adds the attribution processor to rt. (Issue 5 fills this in.)
func addAttribution(rt *runtime) error { return nil }

// attributionToolCmds are `partners roi` and friends. (Issue 5.)
func (a *app) attributionToolCmds() []*cobra.Command { return nil }
