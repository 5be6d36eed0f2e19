// Command ambassadord is a dynamic replacement for Docker's classic socat
// ambassador image: it forwards TCP ports to the backends that its routes
// name, and it can swap those backends while it runs.
//
// The command only wires: it parses flags and the environment into one
// config, turns that into the options of the controller (pkg/daemon) and
// of the admin endpoint (pkg/admin), builds the logger, checks the engines
// of --engine, runs the Docker sources (pkg/watcher: the local engine,
// named "local", and one per --engine) → controller → proxy under
// signal.NotifyContext,
// and exits 0 on SIGTERM, SIGINT or SIGHUP once established connections
// have drained. The CLI subcommands (status, explain, rewire,
// healthcheck) talk to a running daemon through pkg/admin's client; what
// is here parses their flags and prints their answers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version and commit are set by the linker (see the Makefile); a build
// without them reports what the Go toolchain recorded.
var (
	version = "dev"
	commit  = ""
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes one invocation and returns the process exit code.
func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Printf("ambassadord %s (commit %s)\n", version, buildCommit())
			return 0
		case "status", "explain", "rewire", "healthcheck":
			return cliMain(args[0], args[1:], os.Stdout, os.Stderr)
		case "help":
			args = []string{"--help"}
		}
	}
	cfg, err := parseConfig(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		usage(os.Stdout, flagSet(&config{}))
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ambassadord: %v\n", err)
		return 2
	}
	log := newLogger(cfg, os.Stderr)
	defer log.Sync()

	// SIGHUP (a closed terminal, or `docker kill -s HUP`) stops it
	// gracefully too, as SIGTERM does, rather than killing it without a
	// drain, as Go's default for it would (exit 129).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	if err := serve(ctx, cfg, os.Environ(), log); err != nil {
		log.Error("exiting on error", errorField(err))
		return 1
	}
	return 0
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
