// Package config is the shipped configuration file, partners-engine.yaml,
// which the binary embeds: the client commands (tenants, dlq, roi, events,
// demo, xds) run with it outside a checkout, where they need no more than
// the admin API's address and token (PARTNERS_ADMIN_URL,
// PARTNERS_ADMIN_TOKEN) and the brokers.
package config

import _ "embed"

// Shipped is config/partners-engine.yaml as built into the binary.
//
//go:embed partners-engine.yaml
var Shipped []byte
