package main

import (
	"net"
	"os"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUDPIdleRefusesTheMachinesNamespace: udpidle's preparation, run in
// a network namespace with a network card (as `bench udpidle` by hand
// without -host would be), fails and leaves the port range as it was.
func TestUDPIdleRefusesTheMachinesNamespace(t *testing.T) {
	ifs, err := net.Interfaces()
	require.NoError(t, err)
	if !slices.ContainsFunc(ifs, func(i net.Interface) bool { return i.Flags&net.FlagLoopback == 0 }) {
		t.Skip("no interface besides the loopback here")
	}
	before, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	require.NoError(t, err)
	err = udpIdleNamespace()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not in a network namespace of its own")
	after, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))
}
