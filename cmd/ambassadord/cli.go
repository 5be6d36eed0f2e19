package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// The CLI subcommands talk to the running daemon through its admin socket,
// so that they work with `docker exec CONTAINER /ambassadord ...`. Before
// sending anything they check who holds the socket (dialAdmin).

// cliTimeout bounds one request to the daemon.
const cliTimeout = 15 * time.Second

// adminClient returns an HTTP client that dials the admin socket. Each
// command makes one request: keeping its connection would only hold one of
// the daemon's few admin connections.
func adminClient(socket string) *http.Client {
	return &http.Client{
		Timeout: cliTimeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialAdmin(ctx, socket)
			},
		},
	}
}

// cliFlags parses a subcommand's flags; every subcommand takes
// --admin-socket (default from AMBASSADORD_ADMIN_SOCKET, as the daemon; auto
// tries adminSocketFile, then adminSocketAbstract).
func cliFlags(name string, args []string, define func(fs *flag.FlagSet)) (*flag.FlagSet, string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	socket := fs.String("admin-socket", cmpEnv(envName("admin-socket"), adminSocketAuto), "`PATH` of the daemon's admin socket; auto tries "+adminSocketFile+", then "+adminSocketAbstract)
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

// get fetches path from the daemon into v; a non-2xx answer is an error
// carrying the daemon's message.
func get(socket, path string, v any) (int, error) {
	resp, err := adminClient(socket).Get("http://ambassadord" + path)
	if err != nil {
		return 0, daemonUnreachable(socket, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, decodeReply(resp, v)
}

func post(socket, path string, body, v any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	resp, err := adminClient(socket).Post("http://ambassadord"+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, daemonUnreachable(socket, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, decodeReply(resp, v)
}

func decodeReply(resp *http.Response, v any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read the daemon's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e rewireReply
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("the daemon answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(b, v)
}

// daemonUnreachable explains a failed request. A socket held by another
// process is said as it is: the daemon may well be running.
func daemonUnreachable(socket string, err error) error {
	var squat *untrustedSocketError
	if errors.As(err, &squat) {
		return squat
	}
	return fmt.Errorf("cannot reach the ambassadord daemon on its admin socket %s (is it running, in this container, with that --admin-socket?): %w",
		strings.Join(socketPaths(socket), " or "), err)
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
	if _, err := get(socket, "/readyz", nil); err != nil {
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
	var doc statusDoc
	if _, err := get(socket, "/routes", &doc); err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	printStatus(w, &doc)
	return nil
}

func printStatus(w io.Writer, doc *statusDoc) {
	switch d := doc.Docker; {
	case !d.Following:
		fmt.Fprintln(w, "docker:  not followed (static routes)")
	case d.Connected:
		fmt.Fprintf(w, "docker:  connected to %s, own container %s; events %d, reconnects %d, resyncs %d, drift %d\n",
			d.Host, orDash(d.Self), d.Events, d.Reconnects, d.Resyncs, d.Drift)
		if d.StreamError != "" {
			fmt.Fprintf(w, "         EVENTS UNAVAILABLE (%s): following the engine by listing at every --resync\n", d.StreamError)
		}
	default:
		fmt.Fprintf(w, "docker:  UNREACHABLE at %s (%s); serving the last known routes\n", d.Host, orDash(d.Error))
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
			if b.Container != "" {
				s += " (" + b.Container
				if b.Health != "" {
					s += ", " + b.Health
				}
				s += ")"
			}
			backends = append(backends, s)
		}
		note := r.NoBackend
		if r.Override != "" {
			note = "rewired to " + r.Override
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", r.Name, orDash(r.Listen), orDash(r.Target),
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
	var r routeStatus
	if _, err := get(socket, "/routes/"+fs.Arg(0), &r); err != nil {
		return err
	}
	fmt.Fprintf(w, "route %s, listening on %s, from %s\n", r.Name, orDash(r.Listen), r.Source)
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
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", mark, c.Name, c.Reason)
		}
		tw.Flush()
	}
	if len(r.Backends) == 0 {
		fmt.Fprintf(w, "no backend: %s\n", r.NoBackend)
		return nil
	}
	fmt.Fprintln(w, "backends:")
	for _, b := range r.Backends {
		fmt.Fprintf(w, "  %s", b.Addr)
		if b.Container != "" {
			fmt.Fprintf(w, "  container %s (%s) on network %s, %s %s", b.Container, shortContainerID(b.ContainerID), orDash(b.Network), b.State, b.Health)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "active connections: %d\n", r.Active)
	return nil
}

func shortContainerID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func cliRewire(args []string, w io.Writer) error {
	var req rewireRequest
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
	var reply rewireReply
	if _, err := post(socket, "/rewire", req, &reply); err != nil {
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
