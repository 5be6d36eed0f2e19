package metrics

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// The task series of a route follow its task backends, and go with the
// route.
func TestTaskBackends(t *testing.T) {
	m := New("v", "c")
	m.Observer("6379")
	m.BackendSet("6379", []proxy.Backend{{Addr: "10.0.1.3:6379"}, {Addr: "10.0.1.4:6379"}})
	series := func() []map[string]string {
		var out []map[string]string
		for _, s := range scrape(t, m)["ambassadord_backend_task"].GetMetric() {
			l := map[string]string{}
			for _, p := range s.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			assert.Equal(t, 1.0, s.GetGauge().GetValue())
			out = append(out, l)
		}
		return out
	}

	m.TaskBackends("6379", map[string]*source.Task{
		"10.0.1.3:6379": {Service: "redis", Slot: 1, Node: "node-1"},
		"10.0.1.4:6379": {Service: "redis", Slot: 2, Node: "node-2"},
	})
	assert.ElementsMatch(t, []map[string]string{
		{"route": "6379", "backend": "10.0.1.3:6379", "service": "redis", "task": "redis.1", "node": "node-1"},
		{"route": "6379", "backend": "10.0.1.4:6379", "service": "redis", "task": "redis.2", "node": "node-2"},
	}, series())

	// A rolling update replaced task 2.
	m.TaskBackends("6379", map[string]*source.Task{"10.0.1.3:6379": {Service: "redis", Slot: 1, Node: "node-1"}})
	require.Len(t, series(), 1)

	m.RouteRemoved("6379")
	assert.Empty(t, series())
	m.TaskBackends("6379", map[string]*source.Task{"10.0.1.3:6379": {Service: "redis", Slot: 1, Node: "node-1"}})
	assert.Empty(t, series(), "no series for a route that is gone")
}
