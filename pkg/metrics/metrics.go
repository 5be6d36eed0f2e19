package metrics

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/source"
	"github.com/ambassadord/ambassadord/pkg/tlsconf"
)

// metricDef describes one ambassadord metric. The collectors are built
// from these definitions, and Reference renders them for the
// README, so the help text a scrape shows and the documentation are the
// same words.
type metricDef struct {
	name    string
	kind    string // "counter", "gauge" or "histogram"
	labels  []string
	help    string
	buckets []float64 // histograms only
}

// The label values: route is a route's name (its listen port); backend is
// a backend's Addr ("host:port"). Series with a backend label are deleted
// once the backend has left the route's set and has no connection left
// (see Metrics.BackendSet), and every series of a route when the route is
// removed, so the label sets stay bounded by what the routes use now.
var (
	// Per route and backend, reported by the proxy through the observer.
	metricConnActive = metricDef{name: "ambassadord_connections_active", kind: "gauge",
		labels: []string{"route", "backend"},
		help:   "Connections being forwarded to the backend now."}
	metricConns = metricDef{name: "ambassadord_connections_total", kind: "counter",
		labels: []string{"route", "backend"},
		help:   "Connections forwarded to the backend, counted when the backend accepted them."}
	metricBytes = metricDef{name: "ambassadord_bytes_total", kind: "counter",
		labels: []string{"route", "backend", "direction"},
		help:   "Bytes forwarded: direction up is client to backend, down is backend to client. Counted when the connection ends."}
	metricConnectErrors = metricDef{name: "ambassadord_connect_errors_total", kind: "counter",
		labels: []string{"route", "backend", "reason"},
		help:   "Failed connects to the backend, by reason: refused, timeout, unreachable, dns, tls (a TLS backend whose handshake failed) or other. A connection that tries several backends, or retries for --backend-wait, counts every failure."}
	metricRejected = metricDef{name: "ambassadord_connections_rejected_total", kind: "counter",
		labels: []string{"route", "reason"},
		help:   "Connections closed without reaching a backend, by reason: no_backend (none in the set, or none accepted within --backend-wait), limit (--max-conns reached), shutdown (the route was closing), tls (a client of a route listening with TLS failed its handshake: no certificate, another CA's, an identity --tls-allow refuses, not TLS; see ambassadord_tls_handshakes_total) or proxy_header (a client of a route with --accept-proxy untrusted, or without a valid PROXY header; see ambassadord_proxy_headers_rejected_total)."}
	metricResets = metricDef{name: "ambassadord_resets_total", kind: "counter",
		labels: []string{"route", "direction"},
		help:   "Connections one side ended with a reset (or an error), passed on to the other side as a reset: direction up when the client's side failed, down when the backend's did."}
	metricReplays = metricDef{name: "ambassadord_replays_total", kind: "counter",
		labels: []string{"route"},
		help:   "Connections that their backend reset before answering, sent again to another backend (--replay)."}
	metricProxySent = metricDef{name: "ambassadord_proxy_headers_sent_total", kind: "counter",
		labels: []string{"route", "version"},
		help:   "PROXY protocol headers written to backends ahead of the client's bytes (--send-proxy, label ambassador.proxy-protocol), by version: v1 or v2. A replayed connection sends its new backend one too."}
	metricProxyAccepted = metricDef{name: "ambassadord_proxy_headers_accepted_total", kind: "counter",
		labels: []string{"route", "version"},
		help:   "PROXY protocol headers read from trusted clients of a route with --accept-proxy, by version: v1 or v2."}
	metricProxyRejected = metricDef{name: "ambassadord_proxy_headers_rejected_total", kind: "counter",
		labels: []string{"route", "reason"},
		help:   "Clients of a route with --accept-proxy reset without reaching a backend, by reason: untrusted (its address is not in --accept-proxy-from; nothing was read), missing (it sent something else than a header first, or closed), malformed (a header signature, then something invalid) or timeout (no header within --proxy-header-timeout). Each counts as ambassadord_connections_rejected_total{reason=\"proxy_header\"} too."}
	metricEjections = metricDef{name: "ambassadord_backend_ejections_total", kind: "counter",
		labels: []string{"route"},
		help:   "Backends ejected by passive outlier detection (--eject-after failures in a row: connects that failed, or connections reset before an answer): tried only after the others for a while; ambassadord status shows which."}
	metricConnDuration = metricDef{name: "ambassadord_connection_duration_seconds", kind: "histogram",
		labels:  []string{"route"},
		help:    "How long forwarded connections lasted, from the backend's accept until both directions finished.",
		buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600}}

	// Per route, reported by the run loop.
	metricRewires = metricDef{name: "ambassadord_rewires_total", kind: "counter",
		labels: []string{"route"},
		help:   "Times the route's backend set changed, by Docker events or by hand."}
	metricBackends = metricDef{name: "ambassadord_backends", kind: "gauge",
		labels: []string{"route"},
		help:   "Backends in the route's current set."}
	metricTaskBackend = metricDef{name: "ambassadord_backend_task", kind: "gauge",
		labels: []string{"route", "backend", "service", "task", "node"},
		help:   "1 for each backend of the route that is a Swarm service's task: its service, task (redis.2, or redis@NODE for a global service's) and node; join on route and backend."}
	metricOverride = metricDef{name: "ambassadord_route_override", kind: "gauge",
		labels: []string{"route", "target"},
		help:   "1 while the route is rewired by hand (ambassadord rewire) to target, a target name or HOST:PORT; no series when it is not."}

	// Per engine, by source name (the engine label: "local" for the engine
	// of --docker and --docker-host, the NAME of --engine for the
	// others): its state reported by the controller from the sources'
	// updates (SourceState, SourceDropped), its counters read from the
	// sources at each scrape (FollowSource). The names say docker: the one
	// source there was when they were named, and the kind of engine every
	// source follows.
	metricDockerConnected = metricDef{name: "ambassadord_docker_connected", kind: "gauge",
		labels: []string{"engine"},
		help:   "1 while the Docker engine is reachable, else 0."}
	metricDockerStreaming = metricDef{name: "ambassadord_docker_events_followed", kind: "gauge",
		labels: []string{"engine"},
		help:   "1 while the engine's event stream is followed; 0 while it is not, the engine unreachable or its /events unanswered (then the routes follow the engine by listing at every --resync)."}
	metricDockerReconnects = metricDef{name: "ambassadord_docker_reconnects_total", kind: "counter",
		labels: []string{"engine"},
		help:   "Times the watcher subscribed to the engine again, and resynced, after losing it or its event stream."}
	metricDockerEvents = metricDef{name: "ambassadord_docker_events_total", kind: "counter",
		labels: []string{"engine"},
		help:   "Docker events received, relevant or not."}
	metricDockerResyncs = metricDef{name: "ambassadord_docker_resyncs_total", kind: "counter",
		labels: []string{"engine"},
		help:   "Periodic full resyncs with the engine (--resync), whether or not they found changes."}
	metricDockerDrift = metricDef{name: "ambassadord_docker_resync_drift_total", kind: "counter",
		labels: []string{"engine"},
		help:   "Periodic resyncs that found changes the events had not delivered (an upper bound: an event racing a resync counts too)."}
	metricDockerDropped = metricDef{name: "ambassadord_docker_dropped", kind: "gauge",
		labels: []string{"engine"},
		help:   "1 while the remote engine has been unreachable for longer than --engine-grace: its containers are not candidates for new connections until it answers again (established connections are left alone); else 0. The local engine is never dropped."}
	metricDockerDrops = metricDef{name: "ambassadord_docker_drops_total", kind: "counter",
		labels: []string{"engine"},
		help:   "Times the remote engine's containers were dropped, the engine unreachable for longer than --engine-grace."}
	metricEventToApplied = metricDef{name: "ambassadord_event_to_applied_seconds", kind: "histogram",
		help:    "Time from the watcher receiving a Docker event to the routes being applied from the update it led to, whether or not they changed.",
		buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}

	// The active health checks (--check, ambassador.check), reported by
	// the controller's checkers.
	metricHealthChecks = metricDef{name: "ambassadord_health_checks_total", kind: "counter",
		labels: []string{"result"},
		help:   "Active health checks of backends (--check, the ambassador.check label), by result: pass or fail."}
	metricHealthBackends = metricDef{name: "ambassadord_health_backends", kind: "gauge",
		labels: []string{"state"},
		help:   "Backends under an active health check (one per address and check, however many routes use it), by state: up (passed rise checks in a row, in the routes' sets) or down (not yet passed, or failed fall checks in a row; kept out of the sets)."}

	// Per UDP route (53/udp) and backend.
	metricUDPFlowsActive = metricDef{name: "ambassadord_udp_flows_active", kind: "gauge",
		labels: []string{"route", "backend"},
		help:   "UDP flows (one per client address, with a socket of its own to its backend) on the backend now."}
	metricUDPFlows = metricDef{name: "ambassadord_udp_flows_total", kind: "counter",
		labels: []string{"route", "backend"},
		help:   "UDP flows started on the backend, moves to it included."}
	metricUDPFlowsEnded = metricDef{name: "ambassadord_udp_flows_ended_total", kind: "counter",
		labels: []string{"route", "reason"},
		help:   "UDP flows ended, by reason: expired (no datagram either way for --udp-idle-timeout), evicted (--udp-max-flows reached, the flow idle the longest made way), moved (its backend gone or unreachable: the flow went on on another) or closed (a drain, or the route closing)."}
	metricUDPDatagrams = metricDef{name: "ambassadord_udp_datagrams_total", kind: "counter",
		labels: []string{"route", "backend", "direction"},
		help:   "UDP datagrams forwarded: direction up is client to backend, down is backend to client."}
	metricUDPBytes = metricDef{name: "ambassadord_udp_bytes_total", kind: "counter",
		labels: []string{"route", "backend", "direction"},
		help:   "UDP payload bytes forwarded: direction up is client to backend, down is backend to client."}
	metricUDPDropped = metricDef{name: "ambassadord_udp_dropped_total", kind: "counter",
		labels: []string{"route", "reason"},
		help:   "UDP datagrams dropped, by reason: no_backend, flow_cap (no socket for a new flow), too_large (larger than 65,507 bytes, or than the other side takes), buffer (a send buffer full) or unreachable (a send refused)."}
	metricUDPUnreachable = metricDef{name: "ambassadord_udp_unreachable_total", kind: "counter",
		labels: []string{"route", "backend"},
		help:   "ICMP errors (port unreachable: nothing listens) from the backend on a flow's socket: the flow moves to another backend at its next datagram."}

	// TLS (--tls-*): handshakes per route, and the material's expiry.
	metricTLSHandshakes = metricDef{name: "ambassadord_tls_handshakes_total", kind: "counter",
		labels: []string{"route", "side", "result"},
		help:   "TLS handshakes: side listen with clients of a route listening with TLS, backend with the TLS backends it dials; result ok (a full handshake), resumed (a resumed session), or why it failed: unknown_ca, expired, identity (refused by --tls-allow, or a backend's name not in its certificate), bad_certificate, no_certificate, protocol (TLS version, not TLS), timeout or other."}
	metricTLSExpiry = metricDef{name: "ambassadord_tls_certificate_expiry_seconds", kind: "gauge",
		labels: []string{"path", "kind", "subject"},
		help:   "When each loaded certificate expires, in seconds since the Unix epoch: kind cert (--tls-cert), ca (--tls-ca) or client_ca (--tls-client-ca); the material in use, reloaded when its files change."}
	metricTLSReloads = metricDef{name: "ambassadord_tls_reloads_total", kind: "counter",
		labels: []string{"result"},
		help:   "Reloads of the TLS files after they changed: result ok (new handshakes use the new material), or failed (refused, logged; the material in use stays)."}

	metricBuildInfo = metricDef{name: "ambassadord_build_info", kind: "gauge",
		labels: []string{"version", "commit", "goversion"},
		help:   "Always 1; the labels say which build is running."}
)

// metricDefs is every ambassadord metric, in the order of the reference.
var metricDefs = []metricDef{
	metricConnActive, metricConns, metricBytes, metricConnectErrors, metricRejected, metricResets, metricReplays, metricEjections,
	metricProxySent, metricProxyAccepted, metricProxyRejected, metricConnDuration,
	metricRewires, metricBackends, metricTaskBackend, metricOverride,
	metricDockerConnected, metricDockerStreaming, metricDockerReconnects, metricDockerEvents, metricDockerResyncs, metricDockerDrift,
	metricDockerDropped, metricDockerDrops,
	metricEventToApplied,
	metricHealthChecks, metricHealthBackends,
	metricUDPFlowsActive, metricUDPFlows, metricUDPFlowsEnded, metricUDPDatagrams, metricUDPBytes, metricUDPDropped, metricUDPUnreachable,
	metricTLSHandshakes, metricTLSExpiry, metricTLSReloads,
	metricBuildInfo,
}

func (d metricDef) counterVec() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: d.name, Help: d.help}, d.labels)
}

func (d metricDef) gaugeVec() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: d.name, Help: d.help}, d.labels)
}

func (d metricDef) histogramVec() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: d.name, Help: d.help, Buckets: d.buckets}, d.labels)
}

func (d metricDef) histogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Name: d.name, Help: d.help, Buckets: d.buckets})
}

// Reference returns the metrics as a markdown table, for the README.
func Reference() string {
	var b strings.Builder
	b.WriteString("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n")
	for _, d := range metricDefs {
		labels := "none"
		if len(d.labels) > 0 {
			labels = "`" + strings.Join(d.labels, "`, `") + "`"
		}
		help := d.help
		if len(d.buckets) > 0 {
			help += fmt.Sprintf(" Buckets from %gs to %gs.", d.buckets[0], d.buckets[len(d.buckets)-1])
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", d.name, d.kind, labels, help)
	}
	return b.String()
}

// Metrics holds ambassadord's Prometheus metrics, on a registry of its own
// (not the global one, so that tests and a second instance do not clash).
// Its methods are safe for concurrent use: the controller's run loop calls
// them, and the observers it hands to the proxy are called from connection
// goroutines.
type Metrics struct {
	reg *prometheus.Registry

	connActive     *prometheus.GaugeVec
	conns          *prometheus.CounterVec
	bytes          *prometheus.CounterVec
	connectErrors  *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	resets         *prometheus.CounterVec
	replays        *prometheus.CounterVec
	proxySent      *prometheus.CounterVec
	proxyAccepted  *prometheus.CounterVec
	proxyRejected  *prometheus.CounterVec
	ejections      *prometheus.CounterVec
	handshakes     *prometheus.CounterVec
	udpActive      *prometheus.GaugeVec
	udpFlows       *prometheus.CounterVec
	udpEnded       *prometheus.CounterVec
	udpDatagrams   *prometheus.CounterVec
	udpBytes       *prometheus.CounterVec
	udpDropped     *prometheus.CounterVec
	udpUnreachable *prometheus.CounterVec
	connDuration   *prometheus.HistogramVec
	rewires        *prometheus.CounterVec
	backends       *prometheus.GaugeVec
	taskBackends   *prometheus.GaugeVec
	overrides      *prometheus.GaugeVec
	dockerUp       *prometheus.GaugeVec
	streaming      *prometheus.GaugeVec
	dropped        *prometheus.GaugeVec
	drops          *prometheus.CounterVec
	reconnects     *prometheus.CounterVec
	events         *prometheus.CounterVec
	resyncs        *prometheus.CounterVec
	drift          *prometheus.CounterVec
	eventToApplied prometheus.Histogram
	healthChecks   *prometheus.CounterVec
	healthBackends *prometheus.GaugeVec

	mu sync.Mutex
	// The fields below are guarded by mu. It is held across deleting a
	// route's series, so that a route of the same name added meanwhile
	// cannot lose the series it creates.
	routes  map[string]*routeMetrics  // by route name
	sources map[string]*sourceMetrics // by source name
	health  func() (up, down int)     // FollowHealth; nil until then
}

// sourceMetrics is what Metrics knows of one source.
type sourceMetrics struct {
	connected, streaming bool                // as of the last SourceState
	dropped              bool                // as of the last SourceDropped
	live                 func() source.Stats // its counters now; nil until FollowSource
	last                 source.Stats        // as of the last syncStats
}

// routeMetrics tracks one route's backends, to know when their series may
// be deleted.
type routeMetrics struct {
	name string

	mu sync.Mutex
	// The fields below are guarded by mu, which is held while the route's
	// per-backend series change: a sweep must never delete the series of a
	// backend that a connection is opening on.
	removed  bool                       // RouteRemoved was called; events are ignored
	backends map[string]*backendMetrics // by Addr
	udp      bool                       // a UDP route (UDPObserver): flows, not connections

	// proxySent are the route's PROXY header counters by version (v1, v2),
	// taken once: a header is counted on every connection that sends one.
	proxySent [2]prometheus.Counter
}

type backendMetrics struct {
	active int  // connections (UDP: flows) open now
	member bool // in the set of the last BackendSet

	// udp are a UDP backend's datagram and byte counters by direction
	// (udpDirection), taken at its first datagrams: a route's event loop
	// reports after every wake-up, and looking the series up by their
	// labels each time was about 4% of its CPU at 2,000 requests/s. They
	// go with the backend's entry, which is deleted with its series.
	udp [2]struct{ datagrams, bytes prometheus.Counter }
}

// udpDirection is the index of a UDP direction in backendMetrics.udp.
func udpDirection(direction string) int {
	if direction == proxy.DirectionUp {
		return 0
	}
	return 1
}

// New registers every metric, the Go runtime and process
// collectors, and ambassadord_build_info.
func New(version, commit string) *Metrics {
	m := &Metrics{
		reg:            prometheus.NewRegistry(),
		connActive:     metricConnActive.gaugeVec(),
		conns:          metricConns.counterVec(),
		bytes:          metricBytes.counterVec(),
		connectErrors:  metricConnectErrors.counterVec(),
		rejected:       metricRejected.counterVec(),
		resets:         metricResets.counterVec(),
		replays:        metricReplays.counterVec(),
		proxySent:      metricProxySent.counterVec(),
		proxyAccepted:  metricProxyAccepted.counterVec(),
		proxyRejected:  metricProxyRejected.counterVec(),
		ejections:      metricEjections.counterVec(),
		handshakes:     metricTLSHandshakes.counterVec(),
		udpActive:      metricUDPFlowsActive.gaugeVec(),
		udpFlows:       metricUDPFlows.counterVec(),
		udpEnded:       metricUDPFlowsEnded.counterVec(),
		udpDatagrams:   metricUDPDatagrams.counterVec(),
		udpBytes:       metricUDPBytes.counterVec(),
		udpDropped:     metricUDPDropped.counterVec(),
		udpUnreachable: metricUDPUnreachable.counterVec(),
		connDuration:   metricConnDuration.histogramVec(),
		rewires:        metricRewires.counterVec(),
		backends:       metricBackends.gaugeVec(),
		taskBackends:   metricTaskBackend.gaugeVec(),
		overrides:      metricOverride.gaugeVec(),
		dockerUp:       metricDockerConnected.gaugeVec(),
		streaming:      metricDockerStreaming.gaugeVec(),
		dropped:        metricDockerDropped.gaugeVec(),
		drops:          metricDockerDrops.counterVec(),
		reconnects:     metricDockerReconnects.counterVec(),
		events:         metricDockerEvents.counterVec(),
		resyncs:        metricDockerResyncs.counterVec(),
		drift:          metricDockerDrift.counterVec(),
		eventToApplied: metricEventToApplied.histogram(),
		healthChecks:   metricHealthChecks.counterVec(),
		healthBackends: metricHealthBackends.gaugeVec(),
		routes:         map[string]*routeMetrics{},
		sources:        map[string]*sourceMetrics{},
	}
	buildInfo := metricBuildInfo.gaugeVec()
	buildInfo.WithLabelValues(version, commit, runtime.Version()).Set(1)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
		m.connActive, m.conns, m.bytes, m.connectErrors, m.rejected, m.resets, m.replays, m.ejections, m.handshakes, m.connDuration,
		m.proxySent, m.proxyAccepted, m.proxyRejected,
		m.rewires, m.backends, m.taskBackends, m.overrides,
		m.dockerUp, m.streaming, m.dropped, m.drops, engineCounters{m}, m.eventToApplied,
		m.udpActive, m.udpFlows, m.udpEnded, m.udpDatagrams, m.udpBytes, m.udpDropped, m.udpUnreachable,
		m.healthChecks, healthGauge{m},
	)
	m.healthChecks.WithLabelValues("pass")
	m.healthChecks.WithLabelValues("fail")
	return m
}

// Handler serves the metrics in the Prometheus exposition format. A
// collector that fails does not fail the scrape: the others are served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// routeLocked returns the route's state, creating it if needed. m.mu must
// be held.
func (m *Metrics) routeLocked(name string) *routeMetrics {
	rm, ok := m.routes[name]
	if !ok {
		rm = &routeMetrics{name: name, backends: map[string]*backendMetrics{}}
		m.routes[name] = rm
		// Counters a dashboard divides or rates start at 0 rather than
		// appearing with their first increment.
		m.rewires.WithLabelValues(name)
		m.connDuration.WithLabelValues(name)
		for _, reason := range []string{proxy.RejectNoBackend, proxy.RejectLimit, proxy.RejectShutdown, proxy.RejectHandshake, proxy.RejectProxyHeader} {
			m.rejected.WithLabelValues(name, reason)
		}
		m.resets.WithLabelValues(name, proxy.DirectionUp)
		m.resets.WithLabelValues(name, proxy.DirectionDown)
		m.replays.WithLabelValues(name)
		for i, v := range []string{"v1", "v2"} {
			rm.proxySent[i] = m.proxySent.WithLabelValues(name, v)
			m.proxyAccepted.WithLabelValues(name, v)
		}
		for _, reason := range []string{proxy.ProxyUntrusted, proxy.ProxyMissing, proxy.ProxyMalformed, proxy.ProxyTimeout} {
			m.proxyRejected.WithLabelValues(name, reason)
		}
		m.ejections.WithLabelValues(name)
	}
	return rm
}

// Observer returns the observer to set as the proxy route's Observer.
// Calling it again for the same route returns an observer on the same
// state; after RouteRemoved it starts afresh.
func (m *Metrics) Observer(route string) proxy.Observer {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &routeObserver{m: m, rm: m.routeLocked(route)}
}

// UDPObserver returns the observer to set as the UDP route's Observer,
// as Observer does for a TCP route.
func (m *Metrics) UDPObserver(route string) proxy.UDPObserver {
	m.mu.Lock()
	defer m.mu.Unlock()
	rm, ok := m.routes[route]
	if !ok {
		rm = &routeMetrics{name: route, backends: map[string]*backendMetrics{}, udp: true}
		m.routes[route] = rm
		m.rewires.WithLabelValues(route)
		for _, r := range []string{proxy.FlowExpired, proxy.FlowEvicted, proxy.FlowMoved, proxy.FlowClosed} {
			m.udpEnded.WithLabelValues(route, r)
		}
		for _, r := range []string{proxy.DropNoBackend, proxy.DropFlowCap, proxy.DropTooLarge, proxy.DropBuffer, proxy.DropUnreachable} {
			m.udpDropped.WithLabelValues(route, r)
		}
	}
	return &udpObserver{m: m, rm: rm}
}

// udpObserver is the proxy.UDPObserver of one UDP route.
type udpObserver struct {
	m  *Metrics
	rm *routeMetrics
}

func (o *udpObserver) FlowOpened(b proxy.Backend) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	rm.backendLocked(b.Addr).active++
	o.m.udpActive.WithLabelValues(rm.name, b.Addr).Inc()
	o.m.udpFlows.WithLabelValues(rm.name, b.Addr).Inc()
}

func (o *udpObserver) FlowClosed(b proxy.Backend, reason string) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	if st := rm.backendLocked(b.Addr); st.active > 0 {
		st.active--
	}
	o.m.udpActive.WithLabelValues(rm.name, b.Addr).Dec()
	o.m.udpEnded.WithLabelValues(rm.name, reason).Inc()
}

func (o *udpObserver) Datagrams(b proxy.Backend, direction string, n, bytes int) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	c := &rm.backendLocked(b.Addr).udp[udpDirection(direction)]
	if c.datagrams == nil {
		c.datagrams = o.m.udpDatagrams.WithLabelValues(rm.name, b.Addr, direction)
		c.bytes = o.m.udpBytes.WithLabelValues(rm.name, b.Addr, direction)
	}
	c.datagrams.Add(float64(n))
	c.bytes.Add(float64(bytes))
}

func (o *udpObserver) Dropped(reason string, n int) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	o.m.udpDropped.WithLabelValues(rm.name, reason).Add(float64(n))
}

func (o *udpObserver) Unreachable(b proxy.Backend) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	rm.backendLocked(b.Addr)
	o.m.udpUnreachable.WithLabelValues(rm.name, b.Addr).Inc()
}

// Rewired counts a change of the route's backend set. Call it for changes
// only, not when the route is first added.
func (m *Metrics) Rewired(route string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.routeLocked(route)
	m.rewires.WithLabelValues(route).Inc()
}

// BackendSet records the route's new backend set: ambassadord_backends is
// its size, the series of its backends start at 0, and the series of a
// backend that is no longer in it are deleted, unless connections to it
// are still open (established connections survive a rewire, and a dropped
// backend can still take new ones as a make-before-break fallback): those
// are deleted by a later BackendSet once they have closed, so that the
// bytes of the last ones stay visible until then.
func (m *Metrics) BackendSet(route string, backends []proxy.Backend) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rm := m.routeLocked(route)
	rm.mu.Lock()
	defer rm.mu.Unlock()
	m.backends.WithLabelValues(route).Set(float64(len(backends)))
	in := make(map[string]bool, len(backends))
	for _, b := range backends {
		in[b.Addr] = true
	}
	for addr, st := range rm.backends {
		st.member = in[addr]
		if !st.member && st.active == 0 {
			m.deleteBackendSeries(prometheus.Labels{"route": route, "backend": addr})
			delete(rm.backends, addr)
		}
	}
	for addr := range in {
		if _, ok := rm.backends[addr]; !ok {
			rm.backends[addr] = &backendMetrics{member: true}
			if rm.udp {
				m.udpActive.WithLabelValues(route, addr)
				m.udpFlows.WithLabelValues(route, addr)
				for _, d := range []string{proxy.DirectionUp, proxy.DirectionDown} {
					m.udpDatagrams.WithLabelValues(route, addr, d)
					m.udpBytes.WithLabelValues(route, addr, d)
				}
				continue
			}
			m.connActive.WithLabelValues(route, addr)
			m.conns.WithLabelValues(route, addr)
			m.bytes.WithLabelValues(route, addr, "up")
			m.bytes.WithLabelValues(route, addr, "down")
		}
	}
}

// deleteBackendSeries deletes the per-backend series that match labels.
func (m *Metrics) deleteBackendSeries(labels prometheus.Labels) {
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.connActive, m.conns, m.bytes, m.connectErrors,
		m.udpActive, m.udpFlows, m.udpDatagrams, m.udpBytes, m.udpUnreachable,
	} {
		v.DeletePartialMatch(labels)
	}
}

// Overridden records the route's rewire by hand: target is what it was
// rewired to (resolver.Route.Override), "" when it is not.
func (m *Metrics) Overridden(route, target string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.routeLocked(route)
	m.overrides.DeletePartialMatch(prometheus.Labels{"route": route})
	if target != "" {
		m.overrides.WithLabelValues(route, target).Set(1)
	}
}

// TaskBackends records which of the route's backends are Swarm tasks, by
// backend address: the series of the others, and of tasks no longer
// there, are deleted.
func (m *Metrics) TaskBackends(route string, tasks map[string]*source.Task) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.routes[route]; !ok {
		return // removed, or not yet added
	}
	m.taskBackends.DeletePartialMatch(prometheus.Labels{"route": route})
	for addr, t := range tasks {
		m.taskBackends.WithLabelValues(route, addr, t.Service, t.String(), t.Node).Set(1)
	}
}

// RouteRemoved deletes every series of the route. The connections it is
// still draining are no longer counted.
func (m *Metrics) RouteRemoved(route string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rm, ok := m.routes[route]; ok {
		rm.mu.Lock()
		rm.removed = true
		rm.mu.Unlock()
		delete(m.routes, route)
	}
	labels := prometheus.Labels{"route": route}
	m.deleteBackendSeries(labels)
	m.udpEnded.DeletePartialMatch(labels)
	m.udpDropped.DeletePartialMatch(labels)
	m.rejected.DeletePartialMatch(labels)
	m.resets.DeletePartialMatch(labels)
	m.replays.DeletePartialMatch(labels)
	m.proxySent.DeletePartialMatch(labels)
	m.proxyAccepted.DeletePartialMatch(labels)
	m.proxyRejected.DeletePartialMatch(labels)
	m.ejections.DeletePartialMatch(labels)
	m.handshakes.DeletePartialMatch(labels)
	m.connDuration.DeletePartialMatch(labels)
	m.rewires.DeletePartialMatch(labels)
	m.backends.DeletePartialMatch(labels)
	m.taskBackends.DeletePartialMatch(labels)
	m.overrides.DeletePartialMatch(labels)
}

// SourceState records whether the engine of the source named name is
// reachable (source.Update.Connected) and whether its events are followed
// (Connected, and no Update.StreamErr), in the series of its engine label.
func (m *Metrics) SourceState(name string, connected, streaming bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sourceLocked(name)
	s.connected, s.streaming = connected, connected && streaming
	m.dockerUp.WithLabelValues(name).Set(boolGauge(s.connected))
	m.streaming.WithLabelValues(name).Set(boolGauge(s.streaming))
}

// SourceDropped records whether the containers of the source named name
// are dropped from the candidates, its engine unreachable for longer than
// the engine grace; a change to dropped counts one drop.
func (m *Metrics) SourceDropped(name string, dropped bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sourceLocked(name)
	if dropped && !s.dropped {
		m.drops.WithLabelValues(name).Inc()
	}
	s.dropped = dropped
	m.dropped.WithLabelValues(name).Set(boolGauge(dropped))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// sourceLocked returns the state of the source named name, creating it
// and its engine's series, at 0, if needed: an engine that never answers
// shows as not connected rather than not at all. m.mu must be held.
func (m *Metrics) sourceLocked(name string) *sourceMetrics {
	s, ok := m.sources[name]
	if !ok {
		s = &sourceMetrics{}
		m.sources[name] = s
		m.dockerUp.WithLabelValues(name)
		m.streaming.WithLabelValues(name)
		m.dropped.WithLabelValues(name)
		m.drops.WithLabelValues(name)
		m.reconnects.WithLabelValues(name)
		m.events.WithLabelValues(name)
		m.resyncs.WithLabelValues(name)
		m.drift.WithLabelValues(name)
	}
	return s
}

// FollowSource makes every scrape bring the engine counters of the source
// named name up to live(), its counters at that moment
// (source.Source.Stats). They are read at scrape time, not taken from
// updates: a source publishes no update for an event or a resync that
// changes nothing, so on a quiet engine counters from updates would stand
// still. Each source counts in the series of its engine label.
func (m *Metrics) FollowSource(name string, live func() source.Stats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sourceLocked(name).live = live
}

// syncStats brings the engine counters up to the sources' live Stats. A
// value lower than the last one means the counting started over (a new
// source of the same name): all of it is new then. The readings are taken
// under m.mu: two scrapes at once must not apply theirs out of order, or
// the older one would look like counting that started over, and be added
// again.
func (m *Metrics) syncStats() {
	m.mu.Lock()
	defer m.mu.Unlock()
	add := func(c *prometheus.CounterVec, name string, now, last uint64) {
		if now < last {
			last = 0
		}
		if now > last {
			c.WithLabelValues(name).Add(float64(now - last))
		}
	}
	for name, src := range m.sources {
		if src.live == nil {
			continue
		}
		s := src.live()
		add(m.events, name, s.Events, src.last.Events)
		add(m.reconnects, name, s.Reconnects, src.last.Reconnects)
		add(m.resyncs, name, s.Resyncs, src.last.Resyncs)
		add(m.drift, name, s.Drift, src.last.Drift)
		src.last = s
	}
}

// engineCounters collects the engine counters, each scrape first bringing
// them up to the sources' live Stats.
type engineCounters struct{ m *Metrics }

func (c engineCounters) counters() []*prometheus.CounterVec {
	return []*prometheus.CounterVec{c.m.reconnects, c.m.events, c.m.resyncs, c.m.drift}
}

func (c engineCounters) Describe(ch chan<- *prometheus.Desc) {
	for _, ctr := range c.counters() {
		ctr.Describe(ch)
	}
}

func (c engineCounters) Collect(ch chan<- prometheus.Metric) {
	c.m.syncStats()
	for _, ctr := range c.counters() {
		ctr.Collect(ch)
	}
}

// Applied records the time from a Docker event to the routes it changed
// being applied; the caller measures it.
func (m *Metrics) Applied(latency time.Duration) {
	m.eventToApplied.Observe(latency.Seconds())
}

// routeObserver is the proxy.Observer of one route.
type routeObserver struct {
	m  *Metrics
	rm *routeMetrics
}

// lockLive locks rm for an observer's event and reports whether the route
// is still served; if it was removed, it unlocks again and the event is
// ignored. The caller unlocks rm.mu after a true.
func (rm *routeMetrics) lockLive() bool {
	rm.mu.Lock()
	if rm.removed {
		rm.mu.Unlock()
		return false
	}
	return true
}

// backendLocked returns the state of the backend at addr, creating it (as
// not in the set) for a backend only the proxy has named, such as a
// fallback. rm.mu must be held.
func (rm *routeMetrics) backendLocked(addr string) *backendMetrics {
	st, ok := rm.backends[addr]
	if !ok {
		st = &backendMetrics{}
		rm.backends[addr] = st
	}
	return st
}

func (o *routeObserver) ConnOpened(b proxy.Backend) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	rm.backendLocked(b.Addr).active++
	o.m.connActive.WithLabelValues(rm.name, b.Addr).Inc()
	o.m.conns.WithLabelValues(rm.name, b.Addr).Inc()
}

func (o *routeObserver) ConnClosed(b proxy.Backend, up, down int64, d time.Duration) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	if st := rm.backendLocked(b.Addr); st.active > 0 {
		st.active--
	}
	o.m.connActive.WithLabelValues(rm.name, b.Addr).Dec()
	o.m.bytes.WithLabelValues(rm.name, b.Addr, "up").Add(float64(up))
	o.m.bytes.WithLabelValues(rm.name, b.Addr, "down").Add(float64(down))
	o.m.connDuration.WithLabelValues(rm.name).Observe(d.Seconds())
}

func (o *routeObserver) DialFailed(b proxy.Backend, reason string) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	rm.backendLocked(b.Addr)
	o.m.connectErrors.WithLabelValues(rm.name, b.Addr, reason).Inc()
}

func (o *routeObserver) Rejected(reason string) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	o.m.rejected.WithLabelValues(rm.name, reason).Inc()
}

func (o *routeObserver) Reset(direction string) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	o.m.resets.WithLabelValues(rm.name, direction).Inc()
}

func (o *routeObserver) Handshake(side string, resumed bool, err error) {
	result := "ok"
	switch {
	case err != nil:
		result = tlsconf.Reason(err)
	case resumed:
		result = "resumed"
	}
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	o.m.handshakes.WithLabelValues(rm.name, side, result).Inc()
}

// TLS registers the expiry and reload series of the TLS material store,
// read at each scrape.
func (m *Metrics) TLS(s *tlsconf.Store) {
	m.reg.MustRegister(tlsCollector{s})
}

// tlsCollector collects what a tlsconf.Store says of its material.
type tlsCollector struct{ s *tlsconf.Store }

var (
	tlsExpiryDesc  = prometheus.NewDesc(metricTLSExpiry.name, metricTLSExpiry.help, metricTLSExpiry.labels, nil)
	tlsReloadsDesc = prometheus.NewDesc(metricTLSReloads.name, metricTLSReloads.help, metricTLSReloads.labels, nil)
)

func (c tlsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tlsExpiryDesc
	ch <- tlsReloadsDesc
}

func (c tlsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ci := range c.s.Certificates() {
		ch <- prometheus.MustNewConstMetric(tlsExpiryDesc, prometheus.GaugeValue, float64(ci.NotAfter.Unix()), ci.Path, ci.Kind, ci.Subject)
	}
	ok, failed := c.s.Reloads()
	ch <- prometheus.MustNewConstMetric(tlsReloadsDesc, prometheus.CounterValue, float64(ok), "ok")
	ch <- prometheus.MustNewConstMetric(tlsReloadsDesc, prometheus.CounterValue, float64(failed), "failed")
}

func (o *routeObserver) Replayed(proxy.Backend) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	o.m.replays.WithLabelValues(rm.name).Inc()
}

// proxyVersionLabel is the version label of a PROXY protocol header.
func proxyVersionLabel(v int) string {
	switch v {
	case proxy.ProxyV1:
		return "v1"
	case proxy.ProxyV2:
		return "v2"
	}
	return "other"
}

func (o *routeObserver) ProxyHeaderSent(version int) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	if version == proxy.ProxyV1 || version == proxy.ProxyV2 {
		if c := rm.proxySent[version-1]; c != nil {
			c.Inc()
			return
		}
	}
	o.m.proxySent.WithLabelValues(rm.name, proxyVersionLabel(version)).Inc()
}

func (o *routeObserver) ProxyHeaderAccepted(version int) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	o.m.proxyAccepted.WithLabelValues(rm.name, proxyVersionLabel(version)).Inc()
}

func (o *routeObserver) ProxyHeaderRejected(reason string) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	o.m.proxyRejected.WithLabelValues(rm.name, reason).Inc()
}

func (o *routeObserver) Ejected(proxy.Backend, time.Duration) {
	rm := o.rm
	if !rm.lockLive() {
		return
	}
	defer rm.mu.Unlock()
	o.m.ejections.WithLabelValues(rm.name).Inc()
}

// HealthChecked counts one active health check by result, "pass" or
// "fail".
func (m *Metrics) HealthChecked(result string) {
	m.healthChecks.WithLabelValues(result).Inc()
}

// FollowHealth gives the numbers of checked backends up and down, read
// at each scrape.
func (m *Metrics) FollowHealth(counts func() (up, down int)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.health = counts
}

// healthGauge collects ambassadord_health_backends from FollowHealth's
// counts at each scrape.
type healthGauge struct{ m *Metrics }

func (g healthGauge) Describe(ch chan<- *prometheus.Desc) { g.m.healthBackends.Describe(ch) }

func (g healthGauge) Collect(ch chan<- prometheus.Metric) {
	g.m.mu.Lock()
	counts := g.m.health
	g.m.mu.Unlock()
	up, down := 0, 0
	if counts != nil {
		up, down = counts()
	}
	g.m.healthBackends.WithLabelValues("up").Set(float64(up))
	g.m.healthBackends.WithLabelValues("down").Set(float64(down))
	g.m.healthBackends.Collect(ch)
}
