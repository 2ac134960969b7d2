// Package deploy holds no code: it owns the deployment artefacts under
// deploy/ (compose/, k8s/, grafana/, and envoy/ together with its owner) and
// the test that keeps them honest: every image pinned, the listener ports and
// the copies of config/partners-engine.yaml in agreement with internal/config,
// the Envoy bootstraps pointing at the xDS port, the Kubernetes workloads
// hardened and probed, and every Grafana dashboard naming only datasources
// that are provisioned, ClickHouse tables and views the migrations create,
// and Prometheus metrics the Go code declares.
package deploy
