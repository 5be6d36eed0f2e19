package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ambassadord/ambassadord/pkg/admin"
	"github.com/ambassadord/ambassadord/pkg/daemon"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
	"github.com/ambassadord/ambassadord/pkg/tlsconf"
	"github.com/ambassadord/ambassadord/pkg/watcher"
)

// envPrefix starts the environment variable of every flag: --dial-timeout is
// AMBASSADORD_DIAL_TIMEOUT.
const envPrefix = "AMBASSADORD_"

// routesEnv is the environment equivalent of the repeatable --route flag.
const routesEnv = envPrefix + "ROUTES"

// enginesEnv is the environment equivalent of the repeatable --engine
// flag: engines separated by ';'.
const enginesEnv = envPrefix + "ENGINES"

// listFlags are the repeatable flags whose variable holds a list: both the
// flags and the variable count, where any other flag on the command line
// wins over its variable.
var listFlags = map[string]string{"route": routesEnv, "engine": enginesEnv}

// maxReplayBytes bounds --replay-bytes: the memory a connection may hold
// until its backend answers.
const maxReplayBytes = 64 << 10

// config is everything the daemon is told, from flags and the environment.
type config struct {
	routes        routeFlags
	envRoutes     []resolver.Spec // from AMBASSADORD_ROUTES
	classic       bool
	listenAddress string
	dialTimeout   time.Duration
	idleTimeout   time.Duration
	maxConns      int
	shutdownGrace time.Duration
	backendWait   time.Duration
	replayBytes   int
	drain         time.Duration
	docker        string
	dockerHost    string
	network       string
	claimScope    resolver.ClaimScope
	claims        resolver.Claims
	replay        routePorts
	sendProxy     routePorts
	sendProxyVer  string
	acceptProxy   routePorts
	acceptFrom    prefixList
	proxyTimeout  time.Duration
	leastConn     routePorts
	checks        checkFlags
	ejectAfter    int
	ejectTime     time.Duration
	resync        time.Duration
	engines       engineFlags
	envEngines    []watcher.EngineSpec // from AMBASSADORD_ENGINES
	engineGrace   time.Duration
	preferLocal   bool
	adminAddress  string
	adminSocket   string
	adminWritable bool
	adminToken    string // --admin-token-file: the file's path
	adminHosts    hostList
	tlsCert       string
	tlsKey        string
	tlsCA         string
	tlsClientCA   string
	tlsListen     routePorts
	tlsAllow      identityList
	tlsServerName string
	tlsMinVersion string
	udpIdle       time.Duration
	udpMaxFlows   int
	stateFile     string
	logLevel      zapcore.Level
	logFormat     string
}

// claimScopeFlag is the --claim-scope flag.
type claimScopeFlag struct{ scope *resolver.ClaimScope }

func (f claimScopeFlag) String() string {
	if f.scope == nil {
		return "network"
	}
	return f.scope.String()
}

func (f claimScopeFlag) Set(s string) error {
	scope, err := resolver.ParseClaimScope(s)
	if err != nil {
		return err
	}
	*f.scope = scope
	return nil
}

// claimsFlag is the --claims flag.
type claimsFlag struct{ claims *resolver.Claims }

func (f claimsFlag) String() string {
	if f.claims == nil {
		return "label"
	}
	return f.claims.String()
}

func (f claimsFlag) Set(s string) error {
	c, err := resolver.ParseClaims(s)
	if err != nil {
		return err
	}
	*f.claims = c
	return nil
}

// routePorts is a flag naming routes by listen port, or all of them:
// --replay (none by default), --tls-listen.
type routePorts struct {
	all   bool
	ports []int
}

func (r *routePorts) String() string {
	if r == nil {
		return ""
	}
	if r.all {
		return "all"
	}
	s := make([]string, len(r.ports))
	for i, p := range r.ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

func (r *routePorts) Set(s string) error {
	*r = routePorts{}
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	if s == "all" {
		r.all = true
		return nil
	}
	for item := range strings.SplitSeq(s, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(item))
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%q: want all, or listen ports separated by commas (6379,8080)", item)
		}
		r.ports = append(r.ports, p)
	}
	return nil
}

// covers reports whether the route listening on port replays.
func (r routePorts) covers(port int) bool {
	return r.all || slices.Contains(r.ports, port)
}

// prefixList is a comma-separated list flag of CIDRs (a bare address is
// that one address): --accept-proxy-from.
type prefixList []netip.Prefix

func (p *prefixList) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, x := range *p {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

func (p *prefixList) Set(s string) error {
	*p = nil
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		pfx, err := netip.ParsePrefix(item)
		if err != nil {
			a, aerr := netip.ParseAddr(item)
			if aerr != nil || a.Zone() != "" {
				return fmt.Errorf("%q: want addresses or CIDRs separated by commas (10.0.1.5,192.168.0.0/24,fd00::/8)", item)
			}
			pfx = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		*p = append(*p, pfx.Masked())
	}
	return nil
}

// hostList is a comma-separated list flag of host names.
type hostList []string

func (h *hostList) String() string {
	if h == nil {
		return ""
	}
	return strings.Join(*h, ",")
}

func (h *hostList) Set(s string) error {
	*h = nil
	for item := range strings.SplitSeq(s, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		if item == "" {
			continue
		}
		if strings.ContainsAny(item, "/ :@") {
			return fmt.Errorf("%q: want host names without port, separated by commas", item)
		}
		*h = append(*h, item)
	}
	return nil
}

// identityList is --tls-allow: client identities, separated by commas,
// matched exactly; spaces around them are dropped.
type identityList []string

func (l *identityList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *identityList) Set(s string) error {
	*l = nil
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

// checkFlags collects the --check flags: LISTEN:SPEC or all:SPEC, the
// spec in source.ParseCheck's syntax; several separated by ';' (as
// AMBASSADORD_CHECK holds them) or repeated. Key 0 is all.
type checkFlags map[int]source.Check

func (c *checkFlags) String() string {
	if c == nil || len(*c) == 0 {
		return ""
	}
	var items []string
	for _, port := range slices.Sorted(maps.Keys(*c)) {
		listen := strconv.Itoa(port)
		if port == 0 {
			listen = "all"
		}
		items = append(items, listen+":"+source.FormatCheck((*c)[port]))
	}
	return strings.Join(items, ";")
}

func (c *checkFlags) Set(s string) error {
	if *c == nil {
		*c = checkFlags{}
	}
	for item := range strings.SplitSeq(s, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		listen, spec, ok := strings.Cut(item, ":")
		port := 0
		if listen != "all" {
			p, err := strconv.Atoi(listen)
			if !ok || err != nil || p < 1 || p > 65535 {
				return fmt.Errorf("%q: want LISTEN:CHECK or all:CHECK, e.g. 6379:tcp or '6379:send=PING\\r\\n,expect=+PONG'", item)
			}
			port = p
		}
		chk, err := source.ParseCheck(spec)
		if err != nil {
			return fmt.Errorf("%q: %w", item, err)
		}
		if _, dup := (*c)[port]; dup {
			return fmt.Errorf("%q: a second check for route %s", item, listen)
		}
		(*c)[port] = chk
	}
	return nil
}

// routeFlags collects repeated --route flags, parsed as they come so that a
// bad one is reported with its own text.
type routeFlags []resolver.Spec

func (r *routeFlags) String() string { return "" }

func (r *routeFlags) Set(s string) error {
	spec, err := resolver.ParseRoute(s)
	if err != nil {
		return err
	}
	*r = append(*r, spec)
	return nil
}

// engineFlags collects repeated --engine flags, parsed as they come so
// that a bad one is reported with its own text (pkg/watcher's parser, which
// also refuses ssh:// and a plain tcp:// without insecure).
type engineFlags []watcher.EngineSpec

func (e *engineFlags) String() string { return "" }

func (e *engineFlags) Set(s string) error {
	spec, err := watcher.ParseEngine(s)
	if err != nil {
		return err
	}
	*e = append(*e, spec)
	return nil
}

// flagSet declares every flag with its default. The help text, the
// environment names and the README's reference are all derived from it.
func flagSet(cfg *config) *flag.FlagSet {
	fs := flag.NewFlagSet("ambassadord", flag.ContinueOnError)
	fs.Var(&cfg.routes, "route", "forward a port: `LISTEN[/udp]:HOST[:PORT][,HOST[:PORT]...]`; HOST is an IP or a DNS name resolved at each connect; PORT defaults to LISTEN; several backends are balanced round-robin; LISTEN/udp forwards UDP datagrams, per client flow (repeatable)")
	fs.BoolVar(&cfg.classic, "classic", true, "read the classic link variables <ALIAS>_PORT_<PORT>_TCP=tcp://HOST:PORT (and _UDP=udp://HOST:PORT), as the socat ambassador image did; --classic=false ignores them")
	fs.StringVar(&cfg.listenAddress, "listen-address", "", "`IP` to listen on; empty means every interface")
	fs.DurationVar(&cfg.dialTimeout, "dial-timeout", 5*time.Second, "give up connecting to one backend after this long and try the next")
	fs.DurationVar(&cfg.idleTimeout, "idle-timeout", 0, "close a connection after this long without a byte either way; 0 means never")
	fs.DurationVar(&cfg.backendWait, "backend-wait", 3*time.Second, "when no backend accepts a new connection (none known, or all refuse, e.g. while a backend is recreated), hold it this long, retrying at once when the backends change; 0 closes it at once")
	fs.Var(&cfg.replay, "replay", "`ROUTES` whose connections are replayed on the next backend when theirs resets them before answering and then leaves the set (as a stopped container resets its accept queue), or dies or is removed with them unanswered: listen ports separated by commas, or all; only for protocols whose first message is safe to run twice (see the README)")
	fs.IntVar(&cfg.replayBytes, "replay-bytes", 4096, "with --replay, keep up to `BYTES` of what a client sends first, until the backend answers; a connection that sent more is never replayed; at most 65536")
	fs.Var(&cfg.sendProxy, "send-proxy", "`ROUTES` that write a PROXY protocol header (of --send-proxy-version) to their backends ahead of the client's bytes, so that the backend sees the client's address: listen ports separated by commas, or all; only for backends that expect one (a backend labelled ambassador.proxy-protocol=v1|v2 gets one on every route)")
	fs.StringVar(&cfg.sendProxyVer, "send-proxy-version", "v2", "`VERSION` of the PROXY header of --send-proxy: v1 (text) or v2 (binary)")
	fs.Var(&cfg.acceptProxy, "accept-proxy", "`ROUTES` whose clients must send a PROXY protocol header (v1 or v2) first, whose address is then the one passed on: listen ports separated by commas, or all; needs --accept-proxy-from, and any other client is reset unread")
	fs.Var(&cfg.acceptFrom, "accept-proxy-from", "`CIDRS` (addresses or CIDRs separated by commas) of the load balancers or ambassadors trusted to send PROXY headers to the routes of --accept-proxy; required by it")
	fs.DurationVar(&cfg.proxyTimeout, "proxy-header-timeout", 5*time.Second, "reset a client of a route of --accept-proxy that has not sent its PROXY header within this long")
	fs.Var(&cfg.leastConn, "least-conn", "`ROUTES` that send each new connection to the backend with the fewest active connections (for its ambassador.weight), rather than round-robin: listen ports separated by commas, or all; a backend's ambassador.balance label wins")
	fs.Var(&cfg.checks, "check", "actively check the backends of a route: `LISTEN:CHECK` (or all:CHECK), CHECK being tcp (a connect) or send=BYTES,expect=PREFIX (or expect-regexp=RE), with interval=D (5s), timeout=D (1s), rise=N (2), fall=N (3); a backend enters the route's set once it passes rise checks in a row, and leaves it after fall failures; a backend's ambassador.check label wins (repeatable; the variable separates checks with ';')")
	fs.IntVar(&cfg.ejectAfter, "eject-after", 5, "eject a backend after `N` failures in a row (a connect that failed, a connection reset before an answer): new connections try it only after the others, for --eject-time, doubled at each ejection in a row up to 2m; 0 never ejects")
	fs.DurationVar(&cfg.ejectTime, "eject-time", 5*time.Second, "how long a first ejection (--eject-after) lasts")
	fs.DurationVar(&cfg.drain, "drain", 0, "after a rewire, close connections still on the previous backends after this long; 0 keeps them until they end")
	fs.IntVar(&cfg.maxConns, "max-conns", 0, "refuse connections to a route beyond this many at once; 0 means no limit")
	fs.DurationVar(&cfg.shutdownGrace, "shutdown-grace", 5*time.Second, "on SIGTERM, SIGINT or SIGHUP, let established connections finish for this long, then close them (docker stop waits 10s before SIGKILL)")
	fs.StringVar(&cfg.docker, "docker", "auto", "`MODE`: on (follow the Docker engine: resolve target names, links and labels live), off (static routes only), or auto (on when the engine's socket exists)")
	fs.StringVar(&cfg.dockerHost, "docker-host", "", "`URL` of the Docker engine (or Podman's API service); empty means $DOCKER_HOST, else unix:///var/run/docker.sock, else the Podman socket that exists, /run/podman/podman.sock then $XDG_RUNTIME_DIR/podman/podman.sock")
	fs.StringVar(&cfg.network, "network", "", "`NAME` of the network to reach backends on when they share several with the ambassador (a backend's ambassador.network label wins)")
	fs.Var(claimScopeFlag{&cfg.claimScope}, "claim-scope", "`SCOPE` of the containers that may claim a target with the label ambassador.target: network (any container on a network shared with the ambassador), project (only the ambassador's own compose project), or label:KEY[=VALUE] (only containers carrying that label)")
	fs.Var(claimsFlag{&cfg.claims}, "claims", "`LIST` of the routes on which containers may claim the target with the label ambassador.target: label (the route of the ambassador's own ambassador.target label), links (routes from links), routes (--route); none refuses every claim. A name with a dot is never claimable")
	fs.DurationVar(&cfg.resync, "resync", 30*time.Second, "full resync with the Docker engine this often, catching changes its events did not deliver")
	fs.Var(&cfg.engines, "engine", "follow another Docker engine besides the local one: `NAME=URL[,tls=DIR][,address=IP][,insecure]`; URL is unix:///PATH or tcp://HOST:PORT; tls=DIR holds ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH does, and the engine is verified against ca.pem; address=IP is where its containers' published ports are reached (default: the URL's host; a unix:// engine without it is on this host); insecure accepts a tcp:// engine without TLS (repeatable; the variable separates engines with ';')")
	fs.DurationVar(&cfg.engineGrace, "engine-grace", 5*time.Second, "how long a remote engine that becomes unreachable keeps its containers as candidates (they may still serve); after it they are dropped, established connections left alone, until it answers again; the local engine's are kept however long it is down")
	fs.BoolVar(&cfg.preferLocal, "prefer-local", true, "at equal ambassador.priority, send new connections to backends of engines on this host, and to remote engines' only while none of those is usable; --prefer-local=false balances them all")
	fs.StringVar(&cfg.adminAddress, "admin-address", "127.0.0.1:9191", "`ADDR` of the admin HTTP endpoint (/healthz, /readyz, /metrics, /routes); read-only unless --admin-writable; empty disables it")
	fs.StringVar(&cfg.adminSocket, "admin-socket", admin.SocketAuto, "`PATH` of the admin unix socket used by the status, explain, rewire and healthcheck commands; @NAME is an abstract socket (no file, works on a read-only root); auto is "+admin.SocketFile+" when its directory can be made private to the daemon's user, else @ambassadord; empty disables it")
	fs.BoolVar(&cfg.adminWritable, "admin-writable", false, "also accept state changes (rewire) on --admin-address, from requests bearing the token of --admin-token-file; without it only the admin socket accepts them")
	fs.StringVar(&cfg.adminToken, "admin-token-file", "", "`PATH` of a file holding the token that state changes on --admin-address must bear (Authorization: Bearer TOKEN); required by --admin-writable")
	fs.Var(&cfg.adminHosts, "admin-hosts", "`NAMES` (separated by commas) that --admin-address answers to in the Host header, besides IP addresses and localhost: other names are refused, so that a web page cannot reach it by DNS rebinding")
	fs.DurationVar(&cfg.udpIdle, "udp-idle-timeout", proxy.DefaultUDPIdleTimeout, "end a UDP flow (one client address, with a socket of its own to its backend) after this long without a datagram either way")
	fs.IntVar(&cfg.udpMaxFlows, "udp-max-flows", proxy.DefaultUDPMaxFlows, "`N` flows at most per UDP route: a new client beyond it takes the place of the flow idle the longest (counted)")
	fs.StringVar(&cfg.tlsCert, "tls-cert", "", "`FILE` (PEM) of this ambassador's certificate, with its chain: served by the routes that listen with TLS, and presented as the client certificate to TLS backends; reloaded when it changes")
	fs.StringVar(&cfg.tlsKey, "tls-key", "", "`FILE` (PEM) of the key of --tls-cert")
	fs.StringVar(&cfg.tlsCA, "tls-ca", "", "`FILE` (PEM) of the CAs that verify TLS backends (tls:// routes, backends labelled ambassador.tls=true), and clients when --tls-client-ca is not given; empty means the system's roots for backends")
	fs.StringVar(&cfg.tlsClientCA, "tls-client-ca", "", "`FILE` (PEM) of the CAs that verify client certificates on the routes that listen with TLS (every client must present one); empty means --tls-ca")
	fs.Var(&cfg.tlsListen, "tls-listen", "`ROUTES` that listen with TLS, requiring a client certificate: listen ports separated by commas, or all (an ambassador labelled ambassador.tls=true also has the routes of its own labels and links listen with TLS)")
	fs.Var(&cfg.tlsAllow, "tls-allow", "`IDS` (separated by commas) of the clients the TLS routes accept: each one matched exactly against a certificate's URI SANs (spiffe://...), DNS SANs and subject CN; empty accepts any certificate --tls-client-ca signed")
	fs.StringVar(&cfg.tlsServerName, "tls-server-name", "", "`NAME` verified in TLS backends' certificates; empty means the host dialled (a name, or an IP checked against the certificate's IP SANs)")
	fs.StringVar(&cfg.tlsMinVersion, "tls-min-version", "1.3", "`VERSION` of TLS at least, both ways: 1.3, or 1.2 for peers that lack 1.3")
	fs.StringVar(&cfg.stateFile, "state-file", "", "`PATH` of a file keeping rewires across restarts (put it on a mounted volume); empty keeps them in memory only")
	cfg.logLevel = zapcore.InfoLevel
	fs.Var(&cfg.logLevel, "log-level", "`LEVEL`: debug, info, warn or error")
	fs.StringVar(&cfg.logFormat, "log-format", "auto", "`FORMAT`: json, console, or auto (console when stderr is a terminal, else json)")
	fs.Usage = func() { usage(fs.Output(), fs) }
	return fs
}

// envName returns the environment variable that sets a flag.
func envName(flagName string) string {
	if env, ok := listFlags[flagName]; ok {
		return env
	}
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads flags from args, then fills every flag not given on the
// command line from its environment variable. Routes from --route and from
// AMBASSADORD_ROUTES are both kept, and so are engines from --engine and
// AMBASSADORD_ENGINES.
func parseConfig(args []string, getenv func(string) string) (*config, error) {
	cfg := &config{}
	fs := flagSet(cfg)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w (see ambassadord --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see ambassadord --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		v, ok := lookup(getenv, name)
		_, list := listFlags[f.Name]
		if !ok || (set[f.Name] && !list) {
			return
		}
		switch f.Name {
		case "route":
			specs, err := resolver.ParseRouteList(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			cfg.envRoutes = specs
			return
		case "engine":
			specs, err := watcher.ParseEngines(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			cfg.envEngines = specs
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, cfg.validate()
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func (c *config) validate() error {
	var errs []error
	if c.dialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--dial-timeout must be positive, not %s", c.dialTimeout))
	}
	if c.idleTimeout < 0 {
		errs = append(errs, fmt.Errorf("--idle-timeout must not be negative, not %s", c.idleTimeout))
	}
	if c.maxConns < 0 {
		errs = append(errs, fmt.Errorf("--max-conns must not be negative, not %d", c.maxConns))
	}
	if c.backendWait < 0 {
		errs = append(errs, fmt.Errorf("--backend-wait must not be negative, not %s", c.backendWait))
	}
	if c.replayBytes < 0 || c.replayBytes > maxReplayBytes {
		errs = append(errs, fmt.Errorf("--replay-bytes must be from 0 to %d, not %d", maxReplayBytes, c.replayBytes))
	}
	if c.ejectAfter < 0 {
		errs = append(errs, fmt.Errorf("--eject-after must not be negative, not %d", c.ejectAfter))
	}
	if c.ejectTime <= 0 {
		errs = append(errs, fmt.Errorf("--eject-time must be positive, not %s", c.ejectTime))
	}
	if c.drain < 0 {
		errs = append(errs, fmt.Errorf("--drain must not be negative, not %s", c.drain))
	}
	if c.shutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-grace must not be negative, not %s", c.shutdownGrace))
	}
	if c.replay.all || len(c.replay.ports) > 0 {
		if c.replayBytes == 0 {
			errs = append(errs, errors.New("--replay needs --replay-bytes above 0"))
		}
		if c.idleTimeout > 0 {
			errs = append(errs, errors.New("--replay does not work with --idle-timeout (those connections are copied by goroutines, which do not replay)"))
		}
	}
	if _, err := proxy.ParseProxyVersion(c.sendProxyVer); err != nil {
		errs = append(errs, fmt.Errorf("--send-proxy-version: %w", err))
	}
	if (c.acceptProxy.all || len(c.acceptProxy.ports) > 0) && len(c.acceptFrom) == 0 {
		errs = append(errs, errors.New("--accept-proxy needs --accept-proxy-from: the addresses (CIDRs) of the load balancers or ambassadors allowed to send a PROXY header; trusting anyone would let any client claim any address"))
	}
	if len(c.acceptFrom) > 0 && !c.acceptProxy.all && len(c.acceptProxy.ports) == 0 {
		errs = append(errs, errors.New("--accept-proxy-from needs --accept-proxy: the routes that read PROXY headers"))
	}
	if c.proxyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--proxy-header-timeout must be positive, not %s", c.proxyTimeout))
	}
	if c.adminWritable && c.adminAddress != "" && c.adminToken == "" {
		errs = append(errs, errors.New("--admin-writable needs --admin-token-file: state changes over TCP must bear a token, or any web page the operator opens could make them"))
	}
	if c.resync <= 0 {
		errs = append(errs, fmt.Errorf("--resync must be positive, not %s", c.resync))
	}
	if c.udpIdle <= 0 {
		errs = append(errs, fmt.Errorf("--udp-idle-timeout must be positive, not %s", c.udpIdle))
	}
	if c.udpMaxFlows <= 0 {
		errs = append(errs, fmt.Errorf("--udp-max-flows must be positive, not %d", c.udpMaxFlows))
	}
	if _, err := c.tlsVersion(); err != nil {
		errs = append(errs, err)
	}
	if c.tlsListen.all || len(c.tlsListen.ports) > 0 {
		if c.tlsCert == "" || c.tlsKey == "" {
			errs = append(errs, errors.New("--tls-listen needs --tls-cert and --tls-key: the certificate the routes serve"))
		}
		if c.tlsClientCA == "" && c.tlsCA == "" {
			errs = append(errs, errors.New("--tls-listen needs --tls-client-ca (or --tls-ca): a route listening with TLS accepts only clients with a certificate of that CA"))
		}
	}
	if len(c.tlsAllow) > 0 && c.tlsClientCA == "" && c.tlsCA == "" {
		errs = append(errs, errors.New("--tls-allow needs --tls-client-ca (or --tls-ca), which signs the certificates it accepts"))
	}
	if c.engineGrace <= 0 {
		errs = append(errs, fmt.Errorf("--engine-grace must be positive, not %s", c.engineGrace))
	}
	if err := watcher.UniqueNames(c.engineSpecs()); err != nil {
		errs = append(errs, fmt.Errorf("--engine and %s: %w", enginesEnv, err))
	}
	switch c.docker {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("--docker must be auto, on or off, not %q", c.docker))
	}
	switch c.logFormat {
	case "auto", "json", "console":
	default:
		errs = append(errs, fmt.Errorf("--log-format must be auto, json or console, not %q", c.logFormat))
	}
	return errors.Join(errs...)
}

// specs returns every route the configuration names: the classic link
// variables of environ (unless disabled), --route flags and
// AMBASSADORD_ROUTES, merged with conflicts rejected. Warnings are for
// variables deliberately skipped.
func (c *config) specs(environ []string) (specs []resolver.Spec, warnings []string, err error) {
	var classic []resolver.Spec
	if c.classic {
		classic, warnings, err = resolver.ParseClassicEnv(environ)
		if err != nil {
			return nil, warnings, err
		}
	}
	specs, err = resolver.Merge(classic, c.routes, c.envRoutes)
	return specs, warnings, err
}

// engineSpecs returns the engines to follow besides the local one: those
// of --engine, then those of AMBASSADORD_ENGINES.
func (c *config) engineSpecs() []watcher.EngineSpec {
	return slices.Concat([]watcher.EngineSpec(c.engines), c.envEngines)
}

// engineMap describes the engines of specs as the resolver and the
// controller need them (daemon.Options.Engines), by name: an engine with
// an address for its host (address=, else a tcp:// URL's host) is remote,
// its containers reached there at the ports they publish; a unix:// one
// without address= is on this host, local-like. The local engine is not in
// it: an engine missing from the map is local.
func engineMap(specs []watcher.EngineSpec) map[string]resolver.Engine {
	if len(specs) == 0 {
		return nil
	}
	out := make(map[string]resolver.Engine, len(specs))
	for _, s := range specs {
		addr := s.HostAddress()
		out[s.Name] = resolver.Engine{Remote: addr != "", Address: addr}
	}
	return out
}

// usage prints the help, generated from the flag set so that it cannot
// drift from what the binary accepts.
func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `Usage:
  ambassadord [flags]        run the ambassador
  ambassadord version        print the version and commit
  ambassadord status [--json]
                             the running ambassador's routes, backends and engine connection
  ambassadord explain ROUTE  why each container was chosen or skipped for a route (a port or target)
  ambassadord rewire ROUTE-OR-TARGET NEW-TARGET [--drain 30s] [--force]
  ambassadord rewire --reset [ROUTE-OR-TARGET]
                             move new connections to another target (a name or HOST:PORT) at
                             once, or return to label- and link-driven resolution
  ambassadord healthcheck    exit 0 if the running ambassador is ready, else 1
The commands talk to the daemon over its admin socket, so they work with
docker exec CONTAINER /ambassadord COMMAND.

ambassadord forwards TCP ports to backends, as Docker's classic socat
ambassador image did, as a drop-in replacement. Routes come from:
  - every classic link variable <ALIAS>_PORT_<PORT>_TCP=tcp://HOST:HPORT in the
    environment (from docker run --link, or set with -e): listen on PORT,
    forward to HOST:HPORT. Variables a linked container forwards from its own
    environment (<ALIAS>_ENV_...) are never used. _UDP variables are skipped.
  - --route flags and AMBASSADORD_ROUTES (routes separated by spaces or ';').
Two routes on one listening port are an error.

Flags (each can also be set by the environment variable shown; a flag on the
command line wins over its variable):
`)
	fs.VisitAll(func(f *flag.Flag) {
		arg, text := flag.UnquoteUsage(f)
		name := "--" + f.Name
		if arg != "" {
			name += " " + arg
		}
		if def := f.DefValue; def != "" && def != "0" && def != "0s" && f.Name != "route" {
			text += " (default " + def + ")"
		}
		fmt.Fprintf(w, "  %s    [%s]\n        %s\n", name, envName(f.Name), text)
	})
}

// sendProxyVersion is --send-proxy-version as the proxy numbers it
// (validated already).
func (c *config) sendProxyVersion() int {
	v, _ := proxy.ParseProxyVersion(c.sendProxyVer)
	return v
}

// daemonOptions turns the configuration into the controller's options,
// with the route specs, the sources and their engines' addresses, the
// logger and the metrics sink built by the caller.
func (c *config) daemonOptions(specs []resolver.Spec, sources []source.Source, hosts map[string]string,
	log *zap.Logger, m daemon.Metrics) daemon.Options {
	return daemon.Options{
		Specs:         specs,
		Sources:       sources,
		SourceHosts:   hosts,
		Engines:       engineMap(c.engineSpecs()),
		NoLocality:    !c.preferLocal,
		EngineGrace:   c.engineGrace,
		ListenAddress: c.listenAddress,
		DialTimeout:   c.dialTimeout,
		IdleTimeout:   c.idleTimeout,
		BackendWait:   c.backendWait,
		MaxConns:      c.maxConns,
		ReplayAll:     c.replay.all,
		ReplayPorts:   c.replay.ports,
		ReplayBytes:   c.replayBytes,

		SendProxyAll:       c.sendProxy.all,
		SendProxyPorts:     c.sendProxy.ports,
		SendProxyVersion:   c.sendProxyVersion(),
		AcceptProxyAll:     c.acceptProxy.all,
		AcceptProxyPorts:   c.acceptProxy.ports,
		AcceptProxyFrom:    c.acceptFrom,
		ProxyHeaderTimeout: c.proxyTimeout,

		LeastConnAll:   c.leastConn.all,
		LeastConnPorts: c.leastConn.ports,
		Checks:         c.checks,
		EjectAfter:     c.ejectAfter,
		EjectTime:      c.ejectTime,
		ListenTLS:      resolver.ListenTLS{All: c.tlsListen.all, Ports: c.tlsListen.ports},
		UDPIdleTimeout: c.udpIdle,
		UDPMaxFlows:    c.udpMaxFlows,
		Drain:          c.drain,
		ShutdownGrace:  c.shutdownGrace,
		Network:        c.network,
		ClaimScope:     c.claimScope,
		Claims:         c.claims,
		StateFile:      c.stateFile,
		Logger:         log,
		Metrics:        m,
	}
}

// adminServer turns the configuration into the admin endpoint of
// controller, serving metrics.
func (c *config) adminServer(controller admin.Controller, metrics http.Handler, log *zap.Logger) *admin.Server {
	return &admin.Server{
		Controller: controller,
		Address:    c.adminAddress,
		Writable:   c.adminWritable,
		TokenFile:  c.adminToken,
		Hosts:      c.adminHosts,
		Socket:     c.adminSocket,
		Metrics:    metrics,
		Logger:     log,
	}
}

// dockerEngine returns the engine's address and whether to follow it:
// always with --docker=on, never with off, and with auto when DOCKER_HOST
// or --docker-host names one or the default socket exists. Without either,
// the default socket is Docker's, unless only Podman's exists (rootful,
// then rootless: watcher.DetectHost).
func (c *config) dockerEngine(getenv func(string) string) (host string, follow bool) {
	host = c.dockerHost
	if host == "" && c.docker != "off" {
		host = watcher.DetectHost(getenv, fileExists)
	}
	switch c.docker {
	case "on":
		return host, true
	case "off":
		return host, false
	}
	if host != "" || getenv("DOCKER_HOST") != "" {
		return host, true
	}
	return host, fileExists(watcher.SocketPath(""))
}

// fileExists reports whether path exists; tests replace it.
var fileExists = func(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// tlsVersion is --tls-min-version as crypto/tls's constant.
func (c *config) tlsVersion() (uint16, error) {
	switch c.tlsMinVersion {
	case "1.3", "":
		return tls.VersionTLS13, nil
	case "1.2":
		return tls.VersionTLS12, nil
	}
	return 0, fmt.Errorf("--tls-min-version %q: want 1.3 (the default) or 1.2", c.tlsMinVersion)
}

// tlsFiles returns the TLS material to load, and whether there is any.
func (c *config) tlsFiles() (tlsconf.Files, bool) {
	v, _ := c.tlsVersion()
	f := tlsconf.Files{
		Cert: c.tlsCert, Key: c.tlsKey, CA: c.tlsCA, ClientCA: c.tlsClientCA,
		Allow: c.tlsAllow, ServerName: c.tlsServerName, MinVersion: v,
	}
	return f, f.Cert != "" || f.Key != "" || f.CA != "" || f.ClientCA != "" || len(f.Allow) > 0 || f.ServerName != ""
}
