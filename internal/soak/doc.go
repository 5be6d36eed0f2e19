// Package soak is the churn soak's model, clients and judge, apart from
// the engine that the e2e test (e2e/soak_test.go) drives with them.
//
// The test runs one ambassador in front of several targets, each claimed
// by a few backends (dataservers), while a chaos loop changes the engine.
// This package holds what needs no engine, so that it can be tested on its
// own:
//
//   - the chaos model (Model): what each backend is (running, paused,
//     connected, at which address), which action the loop may take next
//     and which are due, so that it never takes the last usable backend
//     of a target away; and the address pool that hands a freed address
//     to the next container, as a busy engine does;
//   - the history (History): what the loop did to which backend and when
//     (cuts, pauses), and which target each route pointed at when;
//   - the clients (Clients): short and long sessions through every route,
//     checking every byte, each recorded as a Session;
//   - the judge (Judge): every session against the history, by the rules
//     documented on Judge.
//
// Concurrency contract: a Model and its History are used by one goroutine,
// the chaos loop's, and read by Judge once the loop is over. Clients runs
// its workers in goroutines it owns until Halt, and its methods are safe
// for concurrent use.
package soak
