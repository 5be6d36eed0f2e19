//go:build !linux

package main

// kernelTLS reports that kernel TLS is Linux's only.
func kernelTLS(int) string { return "Kernel TLS: not probed (Linux only)." }
