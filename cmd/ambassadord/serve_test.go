package main

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/internal/nettest"
)

// runMainEnv, set in the environment of the test binary, makes it run the
// daemon with the arguments it holds (separated by spaces) instead of the
// tests: a test that needs the real process (its signals, its exit code)
// runs os.Args[0] with it.
const runMainEnv = "AMBASSADORD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(runMainEnv); ok {
		os.Exit(run(strings.Fields(args)))
	}
	goleak.VerifyTestMain(m)
}

// TestServe runs the daemon in-process against loopback backends, from a
// classic variable and a --route at once, then stops it as SIGTERM would.
func TestServe(t *testing.T) {
	p1, p2 := nettest.FreePort(t), nettest.FreePort(t)
	_, b1, _ := net.SplitHostPort(nettest.Greeter(t, "from classic"))
	cfg, err := parseConfig([]string{"--docker=off", "--admin-address=", "--admin-socket=", "--listen-address", "127.0.0.1", "--route", strconv.Itoa(p2) + ":localhost:" + strconv.Itoa(nettest.Port(t, nettest.Greeter(t, "from route")))}, env())
	require.NoError(t, err)
	environ := []string{"SVC_PORT_" + strconv.Itoa(p1) + "_TCP=tcp://127.0.0.1:" + b1}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, environ, zaptest.NewLogger(t)) }()

	assert.Equal(t, "from classic", nettest.Read(t, "127.0.0.1:"+strconv.Itoa(p1)))
	assert.Equal(t, "from route", nettest.Read(t, "127.0.0.1:"+strconv.Itoa(p2)))
	cancel()
	require.NoError(t, <-done)
	_, err = net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(p1))
	assert.Error(t, err, "no longer listening")
}

func TestServePortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	free := nettest.FreePort(t)
	cfg, err := parseConfig([]string{"--docker=off", "--listen-address", "127.0.0.1",
		"--route", strconv.Itoa(free) + ":127.0.0.1:1",
		"--route", strconv.Itoa(port) + ":127.0.0.1:1"}, env())
	require.NoError(t, err)
	err = serve(context.Background(), cfg, nil, zaptest.NewLogger(t))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "port "+strconv.Itoa(port)+" is already in use")
	// Nothing is left half-running: the free port was released again.
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(free))
	require.NoError(t, err)
	ln.Close()
}
