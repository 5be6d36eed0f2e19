package proxy

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Splicing between two TCP sockets moves bytes through a pipe inside the
// kernel: socket → pipe → socket, never through user space. io.Copy does
// the same, but holds its pipe (two file descriptors and up to a megabyte
// of kernel buffer) for the whole life of the connection, idle or not: six
// descriptors per proxied connection instead of two. spliceCopy takes a
// pipe from a shared pool only once the source has data, and gives it back
// as soon as the pipe is drained, so an idle connection holds nothing but
// its two sockets, and the pool holds about as many pipes as there are
// transfers in flight.

// copyStream copies from src to dst until src's EOF, for the goroutine
// path (copyConn.copyHalf): with splice(2) between two TCP sockets, where
// the bytes never enter user space and an idle connection holds no pipe,
// and through a buffer otherwise (copyBuffer).
func copyStream(dst, src net.Conn) (int64, error) {
	if d, s, ok := tcpPair(dst, src); ok {
		return spliceCopy(d, s)
	}
	return copyBuffer(dst, src)
}

// tcpPair returns dst and src as TCP connections, if both are.
func tcpPair(dst, src net.Conn) (*net.TCPConn, *net.TCPConn, bool) {
	d, ok1 := dst.(*net.TCPConn)
	s, ok2 := src.(*net.TCPConn)
	return d, s, ok1 && ok2
}

// maxSpliceSize is the size of the pool's pipes and of one splice: large
// enough that a bulk transfer takes few system calls, as in Go's own
// splice (internal/poll).
const maxSpliceSize = 1 << 20

// spliceFlags: never block in the kernel (the Go poller does the waiting),
// and move pages rather than copy where the kernel can.
const spliceFlags = unix.SPLICE_F_NONBLOCK | unix.SPLICE_F_MOVE

// maxPooledPipes bounds the pipes kept for reuse: about the transfers in
// flight at once on a busy ambassador. Pipes beyond it are closed when
// given back.
const maxPooledPipes = 64

// pipe is a kernel pipe of the pool. It is empty whenever it is in the
// pool.
type pipe struct {
	r, w int
}

// pipeBudget caps the pipes open at once, pooled or in use, to a sixteenth
// of the process's descriptor limit (an eighth of its descriptors): pipes
// only make copies cheaper, and must never take the descriptors that
// accepting and dialling need. Past the budget a transfer copies through
// user space. Set once, from RLIMIT_NOFILE.
var pipeBudget = func() int64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return int64(min(lim.Cur, 1<<20) / 16)
}()

// pipesOpen counts the pipes open, pooled or in use.
var pipesOpen atomic.Int64

func newPipe() (*pipe, error) {
	if pipesOpen.Add(1) > pipeBudget {
		pipesOpen.Add(-1)
		return nil, errPipeBudget
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		pipesOpen.Add(-1)
		return nil, os.NewSyscallError("pipe2", err)
	}
	// A smaller pipe still works, with more system calls: ignore errors.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSpliceSize)
	return &pipe{r: fds[0], w: fds[1]}, nil
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
	pipesOpen.Add(-1)
}

// errPipeBudget: pipeBudget pipes are open already.
var errPipeBudget = errors.New("pipe budget used up")

// pipePool holds empty pipes for reuse. It is a bounded channel rather
// than a sync.Pool so that its descriptors are few, counted, and can be
// handed back to the system at once (releasePipes) when the process runs
// out of them.
var pipePool = make(chan *pipe, maxPooledPipes)

// getPipe returns an empty pipe, from the pool or new.
func getPipe() (*pipe, error) {
	select {
	case p := <-pipePool:
		return p, nil
	default:
		return newPipe()
	}
}

// putPipe gives an empty pipe back to the pool, or closes it if the pool
// is full.
func putPipe(p *pipe) {
	select {
	case pipePool <- p:
	default:
		p.close()
	}
}

// releasePipes closes every pooled pipe. The accept loop and the dialer
// call it when the process runs out of file descriptors, so that the pool
// never holds descriptors a connection needs.
func releasePipes() {
	for {
		select {
		case p := <-pipePool:
			p.close()
		default:
			return
		}
	}
}

// errNoPipe wraps a failure to create a pipe (file descriptors exhausted):
// the caller copies through user space instead.
var errNoPipe = errors.New("no pipe for splice")

// spliceCopy copies from src to dst until src's EOF, as io.Copy does, and
// returns the number of bytes written to dst. It never holds a pipe while
// src is idle. When no pipe can be had (out of file descriptors), it moves
// that chunk through a user-space buffer instead, so a connection never
// fails for want of a pipe. A failure is a copyError, which says which
// side failed.
func spliceCopy(dst, src *net.TCPConn) (int64, error) {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return 0, srcErr(err)
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return 0, dstErr(err)
	}
	var (
		written int64
		buf     []byte // for copyChunk, made on first use
	)
	for {
		p, n, err := spliceIn(srcRaw)
		if errors.Is(err, errNoPipe) {
			if buf == nil {
				buf = make([]byte, copyBufferSize)
			}
			m, err := copyChunk(dst, src, buf)
			written += m
			if err != nil || m == 0 {
				return written, err
			}
			continue
		}
		if err != nil {
			return written, srcErr(err)
		}
		if n == 0 {
			return written, nil // EOF
		}
		m, err := spliceOut(dstRaw, p, n)
		written += int64(m)
		if err != nil {
			// Bytes may be left in the pipe: it cannot go back.
			p.close()
			return written, dstErr(err)
		}
		putPipe(p)
	}
}

// spliceIn waits until src has data or EOF, and only then takes a pipe and
// splices what src has into it. It returns the pipe holding n bytes, or
// n == 0 at EOF (with no pipe held).
func spliceIn(src syscall.RawConn) (*pipe, int, error) {
	var (
		p    *pipe
		n    int
		serr error
	)
	err := src.Read(func(fd uintptr) bool {
		if p == nil {
			if p, serr = getPipe(); serr != nil {
				// No pipe to be had: wait for data without one (an idle
				// connection must not sit in a blocking read holding a
				// buffer), then let the caller copy it through user space.
				var peek [1]byte
				if _, _, perr := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT); perr == unix.EAGAIN {
					p, serr = nil, nil
					return false
				}
				serr = errors.Join(errNoPipe, serr)
				return true
			}
		}
		for {
			m, err := unix.Splice(int(fd), nil, p.w, nil, maxSpliceSize, spliceFlags)
			n, serr = int(m), err // m is an int64 on 64-bit systems
			if serr != unix.EINTR {
				break
			}
		}
		if serr == unix.EAGAIN {
			// No data yet: wait without holding the pipe (it is empty).
			putPipe(p)
			p = nil
			return false
		}
		return true
	})
	if serr != nil {
		if p != nil {
			putPipe(p)
		}
		if errors.Is(serr, errNoPipe) {
			return nil, 0, serr
		}
		return nil, 0, os.NewSyscallError("splice", serr)
	}
	if err != nil {
		if p != nil {
			putPipe(p)
		}
		return nil, 0, err
	}
	if n == 0 {
		putPipe(p)
		return nil, 0, nil
	}
	return p, n, nil
}

// spliceOut drains the n bytes in p to dst, waiting whenever dst's send
// buffer is full, and returns how many it wrote.
func spliceOut(dst syscall.RawConn, p *pipe, n int) (int, error) {
	written := 0
	var serr error
	err := dst.Write(func(fd uintptr) bool {
		for written < n {
			m, err := unix.Splice(p.r, nil, int(fd), nil, n-written, spliceFlags)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false // dst is full: wait until it can take more
			case err != nil:
				serr = os.NewSyscallError("splice", err)
				return true
			}
			written += int(m)
		}
		return true
	})
	if serr != nil {
		return written, serr
	}
	return written, err
}
