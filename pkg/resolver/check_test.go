package resolver

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

func TestParseCheck(t *testing.T) {
	tcpDefault := source.Check{Kind: source.CheckTCP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
	for _, tt := range []struct {
		in      string
		want    source.Check
		wantErr string
	}{
		{in: "tcp", want: tcpDefault},
		{in: " tcp , interval=5s ,rise=1,fall=10,timeout=300ms",
			want: source.Check{Kind: source.CheckTCP, Interval: 5 * time.Second, Timeout: 300 * time.Millisecond, Rise: 1, Fall: 10}},
		{in: `send=PING\r\n,expect=+PONG`,
			want: source.Check{Kind: source.CheckSend, Send: "PING\r\n", Expect: "+PONG", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}},
		{in: `expect=SSH-`, want: source.Check{Kind: source.CheckSend, Expect: "SSH-", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}},
		{in: `send=a\x2cb\\\0,expect-regexp=^\+PONG\r?$,interval=250ms`,
			want: source.Check{Kind: source.CheckSend, Send: "a,b\\\x00", ExpectRegexp: `^\+PONG\r?$`, Interval: 250 * time.Millisecond, Timeout: 250 * time.Millisecond, Rise: 2, Fall: 3}},
		{in: "off", want: source.Check{}},
		{in: "", wantErr: "empty check"},
		{in: "http", wantErr: `unknown item "http"`},
		{in: "tcp,send=x,expect=y", wantErr: "give one kind"},
		{in: "send=PING", wantErr: "send needs expect"},
		{in: "interval=1s", wantErr: "no kind of check"},
		{in: "tcp,interval=1ms", wantErr: "interval: 1ms out of range 250ms..10m0s"},
		{in: "tcp,interval=eleven", wantErr: "want a duration"},
		{in: "tcp,interval=1s,timeout=2s", wantErr: "longer than the interval"},
		{in: "tcp,rise=0", wantErr: "rise"},
		{in: "tcp,fall=11", wantErr: "from 1 to 10"},
		{in: "tcp,tcp", wantErr: "given twice"},
		{in: "tcp=1", wantErr: "takes no value"},
		{in: `send=\q,expect=x`, wantErr: `unknown escape \q`},
		{in: `send=x\,expect=x`, wantErr: `lone \`},
		{in: `expect=x\`, wantErr: `lone \`},
		{in: `expect=\x4`, wantErr: `\x needs two hex digits`},
		{in: `expect=\xzz`, wantErr: "two hex digits"},
		{in: "expect=", wantErr: "expect: empty"},
		{in: "expect-regexp=(", wantErr: "expect-regexp"},
		{in: "expect=" + strings.Repeat("x", 257), wantErr: "longer than 256 bytes"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCheck(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			if got.Enabled() {
				again, err := ParseCheck(FormatCheck(got))
				require.NoError(t, err, FormatCheck(got))
				assert.Equal(t, got, again, "FormatCheck round trip")
			}
		})
	}
}

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
			wantCheck: []source.Check{{Kind: source.CheckSend, Send: "PING\r\n", Expect: "+PONG", Interval: 2 * time.Second, Timeout: time.Second, Rise: 1, Fall: 3},
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
