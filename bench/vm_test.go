package main

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// TestVMHoldsUDPFlows boots the VM the idle UDP row runs in where the
// descriptor limit is too low (vm.go), with an initramfs of its own
// making, and has it hold idle flows through an ambassadord built from
// this checkout, as the row does with 50,000.
func TestVMHoldsUDPFlows(t *testing.T) {
	kernel, err := vmKernel()
	if err != nil {
		t.Skipf("no VM: %v", err)
	}
	root, err := harness.RepoRoot(t.Context())
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "ambassadord")
	require.NoError(t, harness.GoBuild(t.Context(), root, "./cmd/ambassadord", bin, ""))

	const flows = 300
	res, logs, err := runInVM(t.Context(), kernel, map[string]string{"/ambassadord": bin},
		[]string{"udpidle", "-cand", strconv.Itoa(udpAmbassadord), "-flows", strconv.Itoa(flows), "-bin", "/ambassadord", "-dir", "/tmp"})
	require.NoError(t, err)
	var r udpIdleResult
	require.NoError(t, json.Unmarshal([]byte(res), &r), "%s", res)
	assert.Empty(t, r.Err, "the VM's logs:\n%s", logs)
	assert.Empty(t, r.Capped, "the VM's descriptor limit is its own")
	assert.Equal(t, flows, r.Held)
	assert.Equal(t, flows, r.FDs, "a descriptor per flow in the proxy")
	assert.Positive(t, r.PSSKiB)
	assert.Contains(t, logs, "route listening", "the proxy's log, from the VM")
}
