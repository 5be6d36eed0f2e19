package main

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sampled returns a bench of cands' columns with a few measurements: two
// rounds of SET req/s and one of idle fds (none for direct), churn runs,
// and rewires.
func sampled(t *testing.T, baselineBin string) *bench {
	t.Helper()
	b := newBench(quick, candidates("/x/ambassadord", baselineBin))
	for ci, vs := range [][]float64{{100000, 120000}, {20000, 30000}, {80000, 90000}, {90000, 100000}, {85000, 95000}} {
		if ci >= len(b.cands) {
			break
		}
		for _, v := range vs {
			b.add("set-rps", ci, v)
		}
		if ci != direct {
			b.add("idle-fds", ci, 2.0004+float64(ci-1))
		}
	}
	for ci := range b.cands {
		b.churnRuns[ci] = 2
	}
	b.failures[classic] = 1
	b.rewire = &rewireResult{
		imageBytes: map[int]int64{ambassadord: 9_800_000},
		kinds: []rewireKind{
			{name: claimRow, cand: ambassadord, rewires: 3, medianMS: 10, p99MS: 20, maxMS: 20, ownMedianMS: 1, ownP99MS: 2, attempts: 100, established: "4 of 4 kept"},
			{name: classicRow, cand: classic, rewires: 3, medianMS: 500, p99MS: 600, maxMS: 600, ownMedianMS: 400, ownP99MS: 500, attempts: 100, failed: 7, failedInStop: 2, established: "0 of 4 kept"},
		},
	}
	if baselineBin != "" {
		b.rewire.imageBytes[baseline] = 9_700_000
		b.rewire.kinds = append(b.rewire.kinds, rewireKind{name: claimRow, cand: baseline, rewires: 3, medianMS: 8, p99MS: 25, maxMS: 25, ownMedianMS: 1, ownP99MS: 2, attempts: 100, established: "4 of 4 kept"})
	}
	return b
}

func TestTable(t *testing.T) {
	var w strings.Builder
	sampled(t, "").table(&w)
	want := `| metric | direct | classic (socat) | HAProxy | ambassadord | ambassadord ÷ HAProxy | issue 5 goal |
|---|---|---|---|---|---|---|
| SET -c 50: req/s | 110,000 | 25,000 (0.23×) | 85,000 (0.77×) | 95,000 (0.86×) | 1.12× | met: ≥1.0× HAProxy |
| idle: proxy fds per connection | — | 2.00 | 3.00 | 4.00 | 1.33× | **not met**: ≤2 |
| churn: failed runs (redis-benchmark stops at the first failed connect) | 0 of 2 runs | 1 of 2 runs | 0 of 2 runs | 0 of 2 runs |  | met: zero failed connects |
| ` + claimRow + ` | — | — | — | median 10.0 ms, p99 20.0 ms (max 20.0) over 3; from when the new backend listened: median 1.0 ms, p99 2.0 ms; failed 0 of 100 fresh connections; established: 4 of 4 kept |  | met: p99 ≤ 50 ms, zero failed; met: p99 ≤ 50 ms from the new backend listening |
| ` + classicRow + ` | — | median 500.0 ms, p99 600.0 ms (max 600.0) over 3; from when the new backend listened: median 400.0 ms, p99 500.0 ms; failed 7 of 100 fresh connections (2 made while the old backend stopped); established: 0 of 4 kept | — | — |  |  |
| image size, MB (repository Dockerfile) | — | — | — | 9.8 |  | met: ≤15 MB |
`
	assert.Equal(t, want, w.String())
}

// TestTableBaseline: a baseline is one more column, measured like
// ambassadord, with a column of ambassadord's ratio to it, in every row.
func TestTableBaseline(t *testing.T) {
	var w strings.Builder
	b := sampled(t, "/x/ambassadord-old")
	require.True(t, b.hasBaseline())
	b.table(&w)
	want := `| metric | direct | classic (socat) | HAProxy | ambassadord | ambassadord (baseline) | ambassadord ÷ HAProxy | ambassadord ÷ baseline | issue 5 goal |
|---|---|---|---|---|---|---|---|---|
| SET -c 50: req/s | 110,000 | 25,000 (0.23×) | 85,000 (0.77×) | 95,000 (0.86×) | 90,000 (0.82×) | 1.12× | 1.06× | met: ≥1.0× HAProxy |
| idle: proxy fds per connection | — | 2.00 | 3.00 | 4.00 | 5.00 | 1.33× | 0.80× | **not met**: ≤2 |
| churn: failed runs (redis-benchmark stops at the first failed connect) | 0 of 2 runs | 1 of 2 runs | 0 of 2 runs | 0 of 2 runs | 0 of 2 runs |  |  | met: zero failed connects |
| ` + claimRow + ` | — | — | — | median 10.0 ms, p99 20.0 ms (max 20.0) over 3; from when the new backend listened: median 1.0 ms, p99 2.0 ms; failed 0 of 100 fresh connections; established: 4 of 4 kept | median 8.0 ms, p99 25.0 ms (max 25.0) over 3; from when the new backend listened: median 1.0 ms, p99 2.0 ms; failed 0 of 100 fresh connections; established: 4 of 4 kept |  | median 1.25×, p99 0.80× | met: p99 ≤ 50 ms, zero failed; met: p99 ≤ 50 ms from the new backend listening |
| ` + classicRow + ` | — | median 500.0 ms, p99 600.0 ms (max 600.0) over 3; from when the new backend listened: median 400.0 ms, p99 500.0 ms; failed 7 of 100 fresh connections (2 made while the old backend stopped); established: 0 of 4 kept | — | — | — |  |  |  |
| image size, MB (repository Dockerfile) | — | — | — | 9.8 | 9.7 |  | 1.01× | met: ≤15 MB |
`
	assert.Equal(t, want, w.String())
	for i, line := range strings.Split(strings.TrimSpace(w.String()), "\n") {
		assert.Equal(t, len(b.columns())+1, strings.Count(line, "|"), "line %d has a cell per column: %s", i, line)
	}
}

// TestTableMissing: a candidate with no measurement shows a dash, and no
// ratio or goal is made of it.
func TestTableMissing(t *testing.T) {
	b := newBench(quick, candidates("/x/ambassadord", "/x/old"))
	b.add("startup-ms", haproxy, 12.5)
	b.add("startup-ms", baseline, 40)
	var w strings.Builder
	b.table(&w)
	lines := strings.Split(strings.TrimSpace(w.String()), "\n")
	require.Len(t, lines, 3)
	assert.Equal(t, "| start-up to accepting on 3 routes, ms | — | — | 12.5 | — | 40.0 |  |  |  |", lines[2])
}

func TestFormat(t *testing.T) {
	tests := []struct {
		v      float64
		digits int
		want   string
	}{
		{1234567, 0, "1,234,567"},
		{-1234, 0, "-1,234"},
		{999, 0, "999"},
		{2.0004, 2, "2.00"},
		{math.NaN(), 1, "—"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, format(tt.v, tt.digits))
	}
	assert.Equal(t, "", ratio(1, 0))
	assert.Equal(t, "", ratio(math.NaN(), 1))
	assert.Equal(t, "0.50×", ratio(1, 2))
	assert.True(t, math.IsNaN(median(nil)))
	assert.Equal(t, 2.5, median([]float64{4, 1, 2, 3}))
}

// TestTableEngines: the rows across engines, ambassadord's alone: the
// remote claim judged against its own goal (p99 ≤ 100 ms), and the
// engine's loss against the grace + 1 s.
func TestTableEngines(t *testing.T) {
	tests := []struct {
		name  string
		claim rewireKind
		loss  engineLoss
		want  []string
	}{
		{
			name:  "met",
			claim: rewireKind{name: engineClaimRow, cand: ambassadord, rewires: 20, medianMS: 30, p99MS: 80, maxMS: 80, ownMedianMS: 5, ownP99MS: 60, attempts: 1000, established: "4 of 4 kept", goalMS: 100},
			loss: engineLoss{grace: 2 * time.Second, drops: []time.Duration{2100 * time.Millisecond, 2200 * time.Millisecond, 2900 * time.Millisecond},
				detected: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 900 * time.Millisecond}, attempts: 900, failed: 1, cut: 1},
			want: []string{
				"| " + engineClaimRow + " | — | — | — | median 30.0 ms, p99 80.0 ms (max 80.0) over 20; from when the new backend listened: median 5.0 ms, p99 60.0 ms; failed 0 of 1000 fresh connections; established: 4 of 4 kept |  | met: p99 ≤ 100 ms, zero failed; met: p99 ≤ 100 ms from the new backend listening |",
				"| " + engineLossRow + " | — | — | — | dropped 2.20 s after the kill (median over 3, max 2.90 s), grace 2s, the engine taken for unreachable 0.10 s after the kill (median; max 0.90 s); failed 1 of 900 fresh connections (1 in flight on the killed engine's backend), the other engine serving throughout |  | met: dropped within grace + 1 s |",
			},
		},
		{
			name:  "not met",
			claim: rewireKind{name: engineClaimRow, cand: ambassadord, rewires: 3, medianMS: 60, p99MS: 120, maxMS: 120, ownMedianMS: 5, ownP99MS: 6, attempts: 100, failed: 2, established: "4 of 4 kept", goalMS: 100},
			loss:  engineLoss{grace: 2 * time.Second, drops: []time.Duration{3100 * time.Millisecond}, attempts: 100},
			want: []string{
				"| " + engineClaimRow + " | — | — | — | median 60.0 ms, p99 120.0 ms (max 120.0) over 3; from when the new backend listened: median 5.0 ms, p99 6.0 ms; failed 2 of 100 fresh connections; established: 4 of 4 kept |  | **not met**: p99 ≤ 100 ms, zero failed; met: p99 ≤ 100 ms from the new backend listening |",
				"| " + engineLossRow + " | — | — | — | dropped 3.10 s after the kill (median over 1, max 3.10 s), grace 2s; failed 0 of 100 fresh connections (0 in flight on the killed engine's backend), the other engine serving throughout |  | **not met**: dropped within grace + 1 s |",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBench(quick, candidates("/x/ambassadord", ""))
			loss := tt.loss
			b.rewire = &rewireResult{kinds: []rewireKind{tt.claim}, loss: &loss}
			var w strings.Builder
			b.printRewire(&w)
			lines := strings.Split(strings.TrimSpace(w.String()), "\n")
			require.Len(t, lines, 3, "the two rows and the image's")
			assert.Equal(t, tt.want, lines[:2])
		})
	}
}

// TestUDPTableBaseline: with a baseline binary the UDP table has its
// column and the ratio of ambassadord's medians to it, and the goals are
// still judged against nginx.
func TestUDPTableBaseline(t *testing.T) {
	b := newBench(quick, candidates("/x/ambassadord", "/x/old"))
	u := &udpBench{b: b, cands: udpCandidates("/x/old"), samples: map[string][][]float64{}}
	require.Len(t, u.cands, udpBaseline+1)
	for ci, v := range []float64{0.1, 8, 0.25, 0.2, 0.19, 0.21} {
		u.add("lat-p50", ci, v)
	}
	var w strings.Builder
	u.table(&w)
	lines := strings.Split(w.String(), "\n")
	assert.Equal(t, "| metric | direct | classic (socat) | nginx (proxy_responses 1) | nginx (sessions kept) | ambassadord | ambassadord (baseline) | ambassadord ÷ nginx (proxy_responses 1) | ambassadord ÷ nginx (sessions kept) | ambassadord ÷ baseline | issue 17 goal |", lines[0])
	assert.Equal(t, "| 2,000 requests/s (20 flows): round trip p50 ms | 0.100 | 8.000 (80.00×) | 0.250 (2.50×) | 0.200 (2.00×) | 0.190 (1.90×) | 0.210 (2.10×) | 0.76× | 0.95× | 0.90× | met: ≤ nginx (proxy_responses 1); met: ≤ nginx (sessions kept) |", lines[2])
}
