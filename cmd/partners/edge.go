package main

import "github.com/spf13/cobra"

// addControlPlane adds the xDS control plane to rt. (Issue 3 fills this in.)
func addControlPlane(rt *runtime) error { return nil }

// addEdge adds the ext_authz edge plugin to rt. (Issue 3 fills this in.)
func addEdge(rt *runtime) error { return nil }

// edgeToolCmds are `partners xds dump` and friends. (Issue 3.)
func (a *app) edgeToolCmds() []*cobra.Command { return nil }
