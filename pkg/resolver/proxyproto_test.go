package resolver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// TestProxyProtocolLabel: a backend labelled ambassador.proxy-protocol
// gets the version it asks for, on a route it is followed on by name as
// on one it claims; a malformed value makes it no backend, with a warning
// and an explanation naming the label, never a silent default; UDP routes
// ignore it.
func TestProxyProtocolLabel(t *testing.T) {
	for _, tt := range []struct {
		name     string
		route    string
		c        source.Container
		want     []source.Backend
		reason   string // of the candidate, when it is not chosen
		warnings []string
	}{
		{name: "unlabelled", route: "6379:redis:6379", c: ctr("redis", "172.18.0.3"),
			want: []source.Backend{{Addr: "172.18.0.3:6379", ID: "id-redis"}}},
		{name: "v1", route: "6379:redis:6379", c: ctr("redis", "172.18.0.3", labels(LabelProxyProtocol, "v1")),
			want: []source.Backend{{Addr: "172.18.0.3:6379", ID: "id-redis", ProxyProtocol: 1}}},
		{name: "v2, spaces and case", route: "6379:redis:6379", c: ctr("redis", "172.18.0.3", labels(LabelProxyProtocol, " V2 ")),
			want: []source.Backend{{Addr: "172.18.0.3:6379", ID: "id-redis", ProxyProtocol: 2}}},
		{name: "claimer", route: "6379:cache:6379", c: ctr("redis", "172.18.0.3", claims("cache"), labels(LabelProxyProtocol, "v2")),
			want: []source.Backend{{Addr: "172.18.0.3:6379", ID: "id-redis", ProxyProtocol: 2}}},
		{name: "malformed: not a backend", route: "6379:redis:6379", c: ctr("redis", "172.18.0.3", labels(LabelProxyProtocol, "true")),
			reason:   `malformed ambassador.proxy-protocol "true": want v1 or v2`,
			warnings: []string{`container redis: skipped for redis: label ambassador.proxy-protocol="true": want v1 or v2`}},
		{name: "UDP ignores it", route: "53/udp:redis:53", c: ctr("redis", "172.18.0.3", labels(LabelProxyProtocol, "bogus")),
			want: []source.Backend{{Addr: "172.18.0.3:53", ID: "id-redis"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := Resolve([]Spec{mustParseRoute(t, tt.route)}, snapshot(amb(), tt.c), Options{Claims: Claims{Routes: true}})
			require.Len(t, res.Routes, 1)
			rt := res.Routes[0]
			assert.Equal(t, tt.want, rt.Backends)
			assert.Equal(t, tt.warnings, res.Warnings)
			if tt.reason != "" {
				require.Len(t, rt.Candidates, 1)
				assert.False(t, rt.Candidates[0].Chosen)
				assert.Equal(t, tt.reason, rt.Candidates[0].Reason)
			}
		})
	}
}
