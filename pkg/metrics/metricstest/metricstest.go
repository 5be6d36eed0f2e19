// Package metricstest reads ambassadord's metrics in tests as Prometheus
// does: it scrapes a /metrics handler or URL, parses the text exposition
// format, and looks series up by their exact label sets. The tests of the
// metrics themselves, of the controller that reports to them and of the
// command that serves them share it.
//
// It holds no state and starts no goroutine. The functions that take no
// testing.TB (Gather, ScrapeURL, Find, Sample) never fail a test, so that
// a condition polled from another goroutine can call them.
package metricstest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// Families are the metric families of one scrape, by name.
type Families map[string]*dto.MetricFamily

// Labels is a series' whole label set.
type Labels map[string]string

// Scrape serves one GET /metrics from h and parses it, failing t on any
// error.
func Scrape(t testing.TB, h http.Handler) Families {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(rec.Body)
	require.NoError(t, err)
	return f
}

// Gather is Scrape for a polled condition: it returns nil on any failure.
func Gather(h http.Handler) Families {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		return nil
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		return nil
	}
	return f
}

// ScrapeURL fetches a /metrics endpoint over HTTP and parses it. It
// returns nil on any failure, so that it can be polled.
func ScrapeURL(url string) Families {
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	return f
}

// Find returns the series of the family name whose labels are exactly
// want, if there is one.
func Find(f Families, name string, want Labels) (*dto.Metric, bool) {
	fam, ok := f[name]
	if !ok {
		return nil, false
	}
	for _, m := range fam.GetMetric() {
		got := Labels{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return m, true
		}
	}
	return nil, false
}

// Sample returns the value of a counter or gauge series, if there is one.
func Sample(f Families, name string, want Labels) (float64, bool) {
	m, ok := Find(f, name, want)
	switch {
	case !ok:
		return 0, false
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	}
	return 0, false
}

// Value returns the value of a counter or gauge series, failing t if there
// is none.
func Value(t testing.TB, f Families, name string, want Labels) float64 {
	t.Helper()
	v, ok := Sample(f, name, want)
	require.True(t, ok, "no counter or gauge %s%v", name, want)
	return v
}

// RouteSeries returns the names of the families that have a series for
// route, sorted.
func RouteSeries(f Families, route string) []string {
	var out []string
	for name, fam := range f {
		for _, m := range fam.GetMetric() {
			if slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == "route" && l.GetValue() == route }) {
				out = append(out, name)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}
