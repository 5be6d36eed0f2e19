package resolver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

func TestResolveWeightCheckAndBalanceLabels(t *testing.T) {
	self := amb(labels(LabelTarget, "db", LabelPorts, "6379"))
	for _, tt := range []struct {
		name         string
		a, b         map[string]string
		wantWeights  []int
		wantCheck    []source.Check
		wantBalance  string
		wantWarnings []string
	}{
		{name: "no labels", wantWeights: []int{0, 0}, wantCheck: []source.Check{{}, {}}},
		{name: "weights", a: map[string]string{LabelWeight: "3"}, b: map[string]string{LabelWeight: "500"},
			wantWeights: []int{3, 100}, wantCheck: []source.Check{{}, {}},
			wantWarnings: []string{`container b: label ambassador.weight="500" clipped to 100`}},
		{name: "bad weight", a: map[string]string{LabelWeight: "-2"}, b: map[string]string{LabelWeight: "lots"},
			wantWeights: []int{1, 1}, wantCheck: []source.Check{{}, {}},
			wantWarnings: []string{`container a: label ambassador.weight="-2": below 1; treated as 1`, `container b: label ambassador.weight="lots": not an integer; treated as 1`}},
		{name: "least-conn wins", a: map[string]string{LabelBalance: "round-robin"}, b: map[string]string{LabelBalance: "least-conn"},
			wantWeights: []int{0, 0}, wantCheck: []source.Check{{}, {}}, wantBalance: BalanceLeastConn},
		{name: "round-robin", a: map[string]string{LabelBalance: "round-robin"}, b: map[string]string{LabelBalance: "random"},
			wantWeights: []int{0, 0}, wantCheck: []source.Check{{}, {}}, wantBalance: BalanceRoundRobin,
			wantWarnings: []string{`container b: label ambassador.balance="random" ignored: want round-robin or least-conn`}},
		{name: "checks", a: map[string]string{LabelCheck: `send=PING\r\n,expect=+PONG,rise=1`}, b: map[string]string{LabelCheck: "off"},
			wantWeights: []int{0, 0},
			wantCheck: []source.Check{{Kind: source.CheckSend, Send: "PING\r\n", Expect: "+PONG", Interval: 5 * time.Second, Timeout: time.Second, Rise: 1, Fall: 3},
				{Kind: source.CheckOff}}},
		{name: "bad check", a: map[string]string{LabelCheck: "tcp,interval=1ns"},
			wantWeights: []int{0, 0}, wantCheck: []source.Check{{}, {}},
			wantWarnings: []string{`container a: label ambassador.check="tcp,interval=1ns" ignored: interval: 1ns out of range 250ms..10m0s`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kv := func(m map[string]string) []string {
				out := []string{LabelTarget, "db"}
				for k, v := range m {
					out = append(out, k, v)
				}
				return out
			}
			res := Resolve(nil, snapshot(self, ctr("a", "172.18.0.3", labels(kv(tt.a)...)), ctr("b", "172.18.0.4", labels(kv(tt.b)...))), Options{})
			require.Len(t, res.Routes, 1)
			rt := res.Routes[0]
			require.Len(t, rt.Backends, 2, rt.NoBackend)
			for i, b := range rt.Backends {
				assert.Equal(t, tt.wantWeights[i], b.Weight, "weight of %s", b)
				assert.Equal(t, tt.wantCheck[i], b.Check, "check of %s", b)
			}
			assert.Equal(t, tt.wantBalance, rt.Balance)
			assert.ElementsMatch(t, tt.wantWarnings, res.Warnings)
		})
	}
}
