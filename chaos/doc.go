// Package chaos is the fault suite of partners-engine (issue 17): it runs
// the `partners` binary's processes (control-plane, edge, webhooks,
// attribution) on real Kafka — the three-broker cluster and a single broker
// of its own — and a ClickHouse of its own, drives a steady load through
// their public surfaces (product events, ext_authz Checks exactly as Envoy
// sends them, conversions and costs, tenant changes through the admin API),
// injects one fault per scenario while the load runs (SIGKILL of the
// partition-leader broker, a single-broker restart, SIGKILL of each
// processor, two instances of each with one killed, a ClickHouse restart
// with batches in flight), and compares what the system did with an
// independent oracle: every delivery made or dead-lettered as expected, the
// deliveries repeated after success within their stated bound, ROI to the
// cent, the tenant registry equal after recovery.
//
// The suite is the test TestFaults (files *_test.go; nothing here is linked
// into a program). A profile (profiles/*.yaml) sizes the load and scales
// time: `make test` runs profiles/bounded.yaml, `make chaos` runs
// profiles/long.yaml (several rounds per scenario). Each run prints one
// table and writes it as JSON under .local/chaos/.
package chaos
