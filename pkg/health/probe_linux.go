package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// probeRaw runs the checks of batch whose address is an IP literal with
// non-blocking sockets of its own and one poll(2) for them all, in the
// calling goroutine, and sets their errors in errs; it returns the
// indexes of the others (a host name), for the goroutine path. A check
// through Go's net costs a dozen system calls and a wake-up of the
// netpoller; here it is socket, connect, poll, getsockopt, (write, read,)
// setsockopt and close, shared polls included. The connection is closed
// with a reset: no TIME_WAIT per check. Once ctx is done the checks in
// flight fail within pollSlice.
func probeRaw(ctx context.Context, batch []*checker, errs []error) (rest []int) {
	probes := make([]*rawProbe, 0, len(batch))
	for i, c := range batch {
		ap, err := netip.ParseAddrPort(c.target.Addr)
		if err != nil {
			rest = append(rest, i)
			continue
		}
		p := &rawProbe{c: c, i: i, fd: -1, deadline: time.Now().Add(c.target.Check.Timeout)}
		p.start(ap)
		probes = append(probes, p)
	}
	pending := func() []*rawProbe {
		var out []*rawProbe
		for _, p := range probes {
			if !p.done {
				out = append(out, p)
			}
		}
		return out
	}
	fds := make([]unix.PollFd, 0, len(probes))
	for open := pending(); len(open) > 0; open = pending() {
		now := time.Now()
		wait := time.Duration(-1)
		fds = fds[:0]
		var polled []*rawProbe
		for _, p := range open {
			if ctx.Err() != nil {
				p.fail(ctx.Err())
				continue
			}
			if !now.Before(p.deadline) {
				p.fail(fmt.Errorf("%s: %w", p.phase(), os.ErrDeadlineExceeded))
				continue
			}
			if left := p.deadline.Sub(now); wait < 0 || left < wait {
				wait = left
			}
			events := int16(unix.POLLIN)
			if p.connecting {
				events = unix.POLLOUT
			}
			fds = append(fds, unix.PollFd{Fd: int32(p.fd), Events: events})
			polled = append(polled, p)
		}
		if len(polled) == 0 {
			break
		}
		wait = min(wait, pollSlice)
		ms := int((wait + time.Millisecond - 1) / time.Millisecond)
		if _, err := unix.Poll(fds, ms); err != nil && !errors.Is(err, unix.EINTR) {
			for _, p := range polled {
				p.fail(fmt.Errorf("poll: %w", err))
			}
			break
		}
		for k, p := range polled {
			if fds[k].Revents != 0 {
				p.ready(fds[k].Revents)
			}
		}
	}
	for _, p := range probes {
		errs[p.i] = p.err
	}
	return rest
}

// pollSlice bounds one poll, so that a monitor closing does not wait for
// a long check's timeout.
const pollSlice = 100 * time.Millisecond

// rawProbe is one check on a socket of its own.
type rawProbe struct {
	c          *checker
	i          int // in the batch
	fd         int
	deadline   time.Time
	connecting bool   // waiting for the connect; else for the answer
	answer     []byte // read so far
	done       bool
	err        error
}

func (p *rawProbe) phase() string {
	if p.connecting {
		return "connect"
	}
	return "answer"
}

// start opens the socket and starts connecting.
func (p *rawProbe) start(ap netip.AddrPort) {
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if a := ap.Addr().Unmap(); a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		p.finish(fmt.Errorf("connect: %w", os.NewSyscallError("socket", err)))
		return
	}
	p.fd = fd
	switch err := unix.Connect(fd, sa); {
	case err == nil:
		p.connected()
	case errors.Is(err, unix.EINPROGRESS):
		p.connecting = true
	default:
		p.fail(fmt.Errorf("connect: %w", os.NewSyscallError("connect", err)))
	}
}

// ready handles poll's events on the socket.
func (p *rawProbe) ready(revents int16) {
	if p.connecting {
		soErr, err := unix.GetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			p.fail(fmt.Errorf("connect: %w", os.NewSyscallError("getsockopt", err)))
		case soErr != 0:
			p.fail(fmt.Errorf("connect: %w", os.NewSyscallError("connect", unix.Errno(soErr))))
		case revents&unix.POLLOUT != 0:
			p.connected()
		default:
			p.fail(errors.New("connect: the socket failed without an error"))
		}
		return
	}
	var buf [maxAnswer]byte
	n, err := unix.Read(p.fd, buf[:maxAnswer-len(p.answer)])
	switch {
	case errors.Is(err, unix.EAGAIN):
		return
	case err != nil:
		p.fail(p.judge(os.NewSyscallError("read", err)))
		return
	case n == 0:
		p.fail(p.judge(errEOF))
		return
	}
	p.answer = append(p.answer, buf[:n]...)
	if verdict := p.judge(nil); verdict != errMore {
		p.finish(verdict)
	}
}

// errEOF is an answer that ended; errMore an answer that may yet pass.
var (
	errEOF  = errors.New("EOF")
	errMore = errors.New("more to read")
)

// judge returns nil when the answer so far passes, errMore when it may
// yet, else why it fails; end is how the answer ended, nil if it has not.
func (p *rawProbe) judge(end error) error {
	chk := p.c.target.Check
	b, prefix := p.answer, chk.Expect
	if !bytes.HasPrefix(b, []byte(prefix[:min(len(prefix), len(b))])) {
		return fmt.Errorf("answer %q does not start with %q", clip(b), prefix)
	}
	if len(b) >= len(prefix) && (p.c.re == nil || p.c.re.Match(b)) {
		return nil
	}
	if end == nil && len(b) < maxAnswer {
		return errMore
	}
	if end == nil {
		end = fmt.Errorf("no match in %d bytes", maxAnswer)
	}
	want := fmt.Sprintf("%q", prefix)
	if p.c.re != nil {
		want = fmt.Sprintf("a match of %q", p.c.re)
	}
	return fmt.Errorf("answer %q is not %s: %w", clip(b), want, end)
}

// connected goes on once connected: a tcp check passes, a send/expect
// check sends.
func (p *rawProbe) connected() {
	p.connecting = false
	chk := p.c.target.Check
	if chk.Kind != source.CheckSend {
		p.finish(nil)
		return
	}
	if chk.Send != "" {
		n, err := unix.Write(p.fd, []byte(chk.Send))
		switch {
		case err != nil:
			p.fail(fmt.Errorf("send: %w", os.NewSyscallError("write", err)))
			return
		case n < len(chk.Send):
			// A fresh socket's buffer takes far more than maxCheckBytes.
			p.fail(fmt.Errorf("send: %d of %d bytes written", n, len(chk.Send)))
			return
		}
	}
}

func (p *rawProbe) fail(err error) { p.finish(err) }

// finish records the result and closes the socket with a reset.
func (p *rawProbe) finish(err error) {
	if p.done {
		return
	}
	p.done, p.err = true, err
	if p.fd >= 0 {
		unix.SetsockoptLinger(p.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(p.fd)
		p.fd = -1
	}
}
