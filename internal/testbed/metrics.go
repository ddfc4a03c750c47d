package testbed

import (
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Scrape reads a Prometheus endpoint's series of the named metrics
// (Samples).
func Scrape(tb testing.TB, url string, names ...string) map[string]float64 {
	tb.Helper()
	resp, err := http.Get(url) //nolint:gosec,noctx // a loopback endpoint of the test's own
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return Samples(tb, body, names...)
}

// Samples parses Prometheus text: every series of the named metrics, as
// the text names it (labels included), and its value.
func Samples(tb testing.TB, text []byte, names ...string) map[string]float64 {
	tb.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(string(text), "\n") {
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(line, n+"{") }) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			tb.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}
