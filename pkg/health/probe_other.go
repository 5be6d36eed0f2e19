//go:build !linux

package health

// probeRaw leaves every check to the goroutine path: the monitor's own
// connects are Linux's (probe_linux.go).
func probeRaw(batch []*checker, errs []error) (rest []int) {
	for i := range batch {
		rest = append(rest, i)
	}
	return rest
}
