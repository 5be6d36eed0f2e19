package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ambassadord/ambassadord/pkg/admin"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
)

// The CLI subcommands talk to the running daemon through its admin socket
// (admin.Client), so that they work with `docker exec CONTAINER
// /ambassadord ...`; before sending anything, the client checks who holds
// the socket. What is here parses their flags and prints.

// client returns the admin client of socket.
func client(socket string) *admin.Client { return &admin.Client{Socket: socket} }

// cliFlags parses a subcommand's flags; every subcommand takes
// --admin-socket (default from AMBASSADORD_ADMIN_SOCKET, as the daemon; auto
// tries admin.SocketFile, then admin.SocketAbstract).
func cliFlags(name string, args []string, define func(fs *flag.FlagSet)) (*flag.FlagSet, string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	socket := fs.String("admin-socket", cmpEnv(envName("admin-socket"), admin.SocketAuto), "`PATH` of the daemon's admin socket; auto tries "+admin.SocketFile+", then "+admin.SocketAbstract)
	if define != nil {
		define(fs)
	}
	// Flags may follow the positional arguments: rewire 6379 cache --drain 30s.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, "", err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	fs.Parse(pos)
	return fs, *socket, nil
}

func cmpEnv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// cliMain runs a CLI subcommand and returns the exit code.
func cliMain(name string, args []string, stdout, stderr io.Writer) int {
	var err error
	switch name {
	case "status":
		err = cliStatus(args, stdout)
	case "explain":
		err = cliExplain(args, stdout)
	case "rewire":
		err = cliRewire(args, stdout)
	case "healthcheck":
		err = cliHealthcheck(args, stdout)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ambassadord %s: %v\n", name, err)
		if name == "healthcheck" {
			return 1
		}
		return 1
	}
	return 0
}

// cliHealthcheck is the image's HEALTHCHECK: healthy when the daemon is
// ready (first sync done, every route listening).
func cliHealthcheck(args []string, w io.Writer) error {
	fs, socket, err := cliFlags("healthcheck", args, nil)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("usage: ambassadord healthcheck")
	}
	if err := client(socket).Ready(context.Background()); err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	fmt.Fprintln(w, "healthy")
	return nil
}

func cliStatus(args []string, w io.Writer) error {
	var asJSON bool
	fs, socket, err := cliFlags("status", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the full status as JSON")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("usage: ambassadord status [--json]")
	}
	doc, err := client(socket).Status(context.Background())
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	printStatus(w, doc)
	return nil
}

// printStatus prints the status document for a person: a line per engine
// (the local one's as it always was, or "not followed"), readiness, and a
// table of the routes.
func printStatus(w io.Writer, doc *api.Status) {
	engines := doc.Sources
	if len(engines) == 0 {
		engines = []api.Source{doc.Docker}
	}
	for _, e := range engines {
		printEngine(w, e)
	}
	if doc.Ready {
		fmt.Fprintln(w, "ready:   yes")
	} else {
		fmt.Fprintf(w, "ready:   no (%s)\n", strings.Join(doc.NotReady, "; "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tLISTEN\tTARGET\tBACKENDS\tACTIVE\tNOTE")
	for _, r := range doc.Routes {
		var backends []string
		for _, b := range r.Backends {
			s := b.Addr
			if b.TLS {
				s = "tls://" + s
			}
			if b.Container != "" {
				s += " (" + cmp.Or(b.Task, b.Container)
				if b.Node != "" {
					s += " on " + b.Node
				}
				if b.Health != "" {
					s += ", " + b.Health
				}
				s += ")"
			}
			s += backendNotes(b)
			backends = append(backends, s)
		}
		note := r.NoBackend
		if r.Override != "" {
			note = "rewired to " + r.Override
		}
		listen := orDash(r.Listen)
		if r.TLS && r.Listen != "" {
			listen += " (tls)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", r.Name, listen, orDash(r.Target),
			orDash(strings.Join(backends, ", ")), r.Active, note)
	}
	tw.Flush()
	if len(doc.Warnings) > 0 {
		fmt.Fprintln(w)
		for _, warn := range doc.Warnings {
			fmt.Fprintln(w, "warning: "+warn)
		}
	}
}

// printEngine prints one engine's line: its label ("docker:", padded to
// line up with "ready:") and its state.
func printEngine(w io.Writer, e api.Source) {
	label := cmp.Or(e.Name, "docker") + ":"
	indent := strings.Repeat(" ", max(9, len(label)+1))
	label += indent[len(label):]
	switch {
	case !e.Following:
		fmt.Fprintln(w, label+"not followed (static routes)")
	case e.Connected:
		host := e.Host
		if e.Engine != "" {
			host += ", " + e.Engine
		}
		fmt.Fprintf(w, "%sconnected to %s, own container %s; events %d, reconnects %d, resyncs %d, drift %d\n",
			label, host, orDash(e.Self), e.Events, e.Reconnects, e.Resyncs, e.Drift)
		if e.StreamError != "" {
			fmt.Fprintf(w, "%sEVENTS UNAVAILABLE (%s): following the engine by listing at every --resync\n", indent, e.StreamError)
		}
	case !e.Remote:
		fmt.Fprintf(w, "%sUNREACHABLE at %s (%s); serving the last known routes\n", label, e.Host, orDash(e.Error))
	default:
		// A remote engine: its containers stay candidates for its grace,
		// then are dropped until it answers.
		since := ""
		if !e.UnreachableSince.IsZero() {
			since = " since " + e.UnreachableSince.UTC().Format(time.RFC3339)
		}
		fate := fmt.Sprintf("its containers stay candidates for the %s grace", time.Duration(e.Grace))
		switch {
		case !e.Synced:
			fate = "never synced: none of its containers is known"
		case e.Dropped:
			fate = fmt.Sprintf("its containers are dropped (%s grace over) until it answers", time.Duration(e.Grace))
		}
		fmt.Fprintf(w, "%sUNREACHABLE at %s (%s)%s; %s\n", label, e.Host, orDash(e.Error), since, fate)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cliExplain(args []string, w io.Writer) error {
	fs, socket, err := cliFlags("explain", args, nil)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: ambassadord explain ROUTE (a listen port or a target name)")
	}
	r, err := client(socket).Route(context.Background(), fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "route %s, listening on %s, from %s\n", r.Name, orDash(r.Listen), r.Source)
	if r.TLS {
		fmt.Fprintln(w, "listens with TLS: a client certificate of the client CA required (--tls-listen, ambassador.tls=true)")
	}
	switch {
	case r.Override != "":
		fmt.Fprintf(w, "rewired by hand to %s (ambassadord rewire --reset %s returns to labels and links)\n", r.Override, r.Name)
	case r.Target != "":
		fmt.Fprintf(w, "target %s, backend port %d\n", r.Target, r.Port)
	default:
		fmt.Fprintln(w, "static backends")
	}
	if len(r.Candidates) > 0 {
		fmt.Fprintln(w, "candidates:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, c := range r.Candidates {
			mark := "skipped"
			if c.Chosen {
				mark = "CHOSEN"
			}
			name := c.Name
			if c.Task != "" {
				name += " (task " + c.Task + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", mark, name, c.Reason)
		}
		tw.Flush()
	}
	if len(r.Backends) == 0 {
		fmt.Fprintf(w, "no backend: %s\n", r.NoBackend)
		return nil
	}
	if r.Balance != "" {
		fmt.Fprintf(w, "balance: %s\n", r.Balance)
	}
	fmt.Fprintln(w, "backends:")
	for _, b := range r.Backends {
		fmt.Fprintf(w, "  %s", b.Addr)
		if b.Task != "" {
			fmt.Fprintf(w, "  task %s of service %s on node %s, container %s (%s) on network %s, %s %s", b.Task, b.Service, b.Node, b.Container, shortContainerID(b.ContainerID), orDash(b.Network), b.State, b.Health)
		} else if b.Container != "" {
			fmt.Fprintf(w, "  container %s (%s) on network %s, %s %s", b.Container, shortContainerID(b.ContainerID), orDash(b.Network), b.State, b.Health)
		}
		if b.Weight > 1 {
			fmt.Fprintf(w, ", weight %d", b.Weight)
		}
		fmt.Fprintln(w)
		if b.Check != "" {
			fmt.Fprintf(w, "    health check %s: %s (%s)\n", b.Check, strings.ToUpper(b.CheckState), b.CheckDetail)
		}
		if !b.EjectedUntil.IsZero() {
			fmt.Fprintf(w, "    EJECTED until %s (%d in a row): it failed --eject-after connections in a row; tried only after the others\n",
				b.EjectedUntil.UTC().Format(time.RFC3339), b.Ejections)
		}
	}
	if r.Protocol == "udp" {
		fmt.Fprintf(w, "active flows: %d\n", r.Active)
	} else {
		fmt.Fprintf(w, "active connections: %d\n", r.Active)
	}
	return nil
}

// backendNotes is what status says of a backend besides its address and
// container: its weight, its health check's state when it is not up, an
// ejection.
func backendNotes(b api.Backend) string {
	var notes []string
	if b.Weight > 1 {
		notes = append(notes, fmt.Sprintf("weight %d", b.Weight))
	}
	if b.Check != "" && b.CheckState != "up" {
		notes = append(notes, "check "+b.CheckState)
	}
	if !b.EjectedUntil.IsZero() {
		notes = append(notes, "ejected")
	}
	if len(notes) == 0 {
		return ""
	}
	return " [" + strings.Join(notes, ", ") + "]"
}

func shortContainerID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func cliRewire(args []string, w io.Writer) error {
	var req api.RewireRequest
	fs, socket, err := cliFlags("rewire", args, func(fs *flag.FlagSet) {
		fs.DurationVar(&req.Drain, "drain", 0, "close connections still on the previous backends after this long (default: keep them)")
		fs.BoolVar(&req.Reset, "reset", false, "drop the rewire of ROUTE (or every rewire, without ROUTE): back to label- and link-driven resolution")
		fs.BoolVar(&req.Force, "force", false, "rewire even when the new target has no usable backend yet")
	})
	if err != nil {
		return err
	}
	switch {
	case req.Reset && fs.NArg() <= 1:
		req.Key = fs.Arg(0)
	case !req.Reset && fs.NArg() == 2:
		req.Key, req.Target = fs.Arg(0), fs.Arg(1)
	default:
		return errors.New("usage: ambassadord rewire ROUTE-OR-TARGET NEW-TARGET [--drain 30s] [--force]\n" +
			"       ambassadord rewire --reset [ROUTE-OR-TARGET]")
	}
	reply, err := client(socket).Rewire(context.Background(), req)
	if err != nil {
		return err
	}
	if len(reply.Routes) == 0 {
		fmt.Fprintln(w, "no route changed")
	}
	for _, r := range reply.Routes {
		var backends []string
		for _, b := range r.Backends {
			backends = append(backends, b.Addr)
		}
		fmt.Fprintf(w, "route %s → %s\n", r.Name, orDash(strings.Join(backends, ", ")))
	}
	return nil
}
