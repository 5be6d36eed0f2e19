package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// pollInterval is how often the Wait helpers re-check; readiness here takes
// tens of milliseconds to seconds.
const pollInterval = 50 * time.Millisecond

// Poll calls check until it returns nil, returns an error wrapped by
// Permanent, or ctx ends. Any other error is the reason it is not done yet;
// on timeout the last reason is part of the error, so a failure says what
// was still missing. This is the only way the harness waits: never a fixed
// sleep.
func Poll(ctx context.Context, check func(context.Context) error) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var last error
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		var p permanentError
		if errors.As(err, &p) {
			if ctx.Err() != nil && last != nil {
				// The check failed because the deadline hit mid-call;
				// the previous reason says more.
				return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
			return p.err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// Permanent marks an error that makes Poll give up at once.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// WaitTCP waits until addr accepts a TCP connection.
func WaitTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	err := Poll(ctx, func(ctx context.Context) error {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := d.DialContext(dctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return fmt.Errorf("wait for %s to accept: %w", addr, err)
	}
	return nil
}

// WaitHealthy waits until the container's healthcheck reports healthy. It
// fails at once if the container stops or turns unhealthy.
func (e *Engine) WaitHealthy(ctx context.Context, id string) error {
	err := Poll(ctx, func(ctx context.Context) error {
		insp, err := e.Inspect(ctx, id)
		if err != nil {
			return Permanent(err)
		}
		s := insp.State
		switch {
		case s == nil || !s.Running:
			return Permanent(errors.New("container is not running"))
		case s.Health == nil:
			return Permanent(errors.New("container has no healthcheck"))
		case s.Health.Status == container.Healthy:
			return nil
		case s.Health.Status == container.Unhealthy:
			return Permanent(fmt.Errorf("container is unhealthy: %s", lastProbe(s.Health)))
		}
		return fmt.Errorf("health %s", s.Health.Status)
	})
	if err != nil {
		return fmt.Errorf("wait for container %s to be healthy: %w", id, err)
	}
	return nil
}

func lastProbe(h *container.Health) string {
	if len(h.Log) == 0 {
		return "no probe yet"
	}
	l := h.Log[len(h.Log)-1]
	return fmt.Sprintf("exit %d: %s", l.ExitCode, strings.TrimSpace(l.Output))
}

// WaitLog waits until the container's output (stdout or stderr) contains
// substr. It fails at once if the container exits without printing it.
func (e *Engine) WaitLog(ctx context.Context, id, substr string) error {
	err := Poll(ctx, func(ctx context.Context) error {
		// Inspect before reading: output read after seeing "exited" is complete.
		insp, err := e.Inspect(ctx, id)
		if err != nil {
			return Permanent(err)
		}
		stdout, stderr, err := e.Logs(ctx, id)
		if err != nil {
			return Permanent(err)
		}
		if strings.Contains(stdout, substr) || strings.Contains(stderr, substr) {
			return nil
		}
		if insp.State == nil || !insp.State.Running {
			return Permanent(fmt.Errorf("container exited without logging it; output:\n%s%s", stdout, stderr))
		}
		return errors.New("not logged yet")
	})
	if err != nil {
		return fmt.Errorf("wait for container %s to log %q: %w", id, substr, err)
	}
	return nil
}

// Wait waits for the container to stop and returns its exit code.
func (e *Engine) Wait(ctx context.Context, id string) (int64, error) {
	res := e.Client.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case r := <-res.Result:
		if r.Error != nil && r.Error.Message != "" {
			return r.StatusCode, fmt.Errorf("wait for container %s: %s", id, r.Error.Message)
		}
		return r.StatusCode, nil
	case err := <-res.Error:
		return 0, fmt.Errorf("wait for container %s: %w", id, err)
	}
}

// Logs returns everything the container has written so far.
func (e *Engine) Logs(ctx context.Context, id string) (stdout, stderr string, err error) {
	rc, err := e.Client.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return "", "", fmt.Errorf("read logs of container %s: %w", id, err)
	}
	defer rc.Close()
	var o, s bytes.Buffer
	if _, err := stdcopy.StdCopy(&o, &s, rc); err != nil {
		return "", "", fmt.Errorf("read logs of container %s: %w", id, err)
	}
	return o.String(), s.String(), nil
}
