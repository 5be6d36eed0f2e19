// Package e2e holds ambassadord's end-to-end tests. They run only with the
// e2e build tag (`make e2e`) and need a Docker Engine: TestMain builds the
// static binary and the FROM-scratch images once, each test starts real
// containers on the default bridge and talks to them from the host, and
// every resource carries the label ambassadord.e2e=<run> and is removed
// by that label. Without an engine the tests skip with the reason, unless
// AMBASSADORD_E2E_REQUIRE_ENGINE=1 (set by CI), which makes them fail.
//
// The tests' tools are packages of their own at the module root, shared
// with the benchmark and the demo: the engine harness (internal/harness),
// the data fixture (internal/dataserver) and its protocol
// (internal/dataproto), the load generator (internal/load), and the soak's
// chaos model, clients and judge (internal/soak).
package e2e
