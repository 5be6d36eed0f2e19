//go:build !linux

package main

import "os"

// isTerminal reports whether f is a character device, as a terminal is:
// close enough to choose the log format where Linux's ioctl is not there.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
