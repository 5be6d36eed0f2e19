package proxy

import (
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload (UDP_SEGMENT, Linux 4.18). The datagrams of a
// batch that go to one destination, a client's to its flow or a flow's
// replies to its client, leave in one message when they are of one size
// (and one shorter to end them): the message carries the size in a
// control message, and the stack handles the lot as one packet, through
// routing, netfilter and the loopback, bridge or veth hop, cutting it into
// the datagrams only at the end (the receiving socket, or a device that
// cannot cut). The receiver gets the datagrams as they were sent, one by
// one, with their boundaries, unless it asked for UDP_GRO, when it gets
// them together with their size, as it asked. What it saves is the
// stack's cost per datagram, most of what a proxy of small datagrams
// spends; sendmmsg saves only the system calls.
//
// A path whose MTU a segment does not fit refuses segmentation (EINVAL or
// EMSGSIZE), as does one through IPsec or a device that cannot checksum
// (EIO): the datagrams of a refused message are sent again one by one, and
// the size allowed segmented (udpLoop.gsoUp, gsoDown) drops below the
// refused one, or to none after EIO, for the loop's life. It starts at
// udpGSOMaxSize, which a 1500-byte MTU fits.

const (
	// udpGSOMaxSize is the largest datagram sent segmented at first: one
	// that fits a 1500-byte MTU under IPv6's and UDP's headers.
	udpGSOMaxSize = 1500 - 40 - 8

	// udpGSOMaxSegments is how many datagrams one message carries at
	// most: the kernel's UDP_MAX_SEGMENTS before Linux 6.9 (128 since).
	udpGSOMaxSegments = 64

	// udpGSOMaxBytes is how many bytes one message carries at most: the
	// largest IPv4 UDP payload, which the datagrams fill as one packet
	// until they are cut.
	udpGSOMaxBytes = 65535 - 20 - 8
)

// udpCmsgSpace is the room of one control message carrying a uint16: the
// segment size.
var udpCmsgSpace = unix.CmsgSpace(2)

// gsoSupported reports whether the kernel segments UDP for fd's family.
func gsoSupported(fd int) bool {
	_, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	return err == nil
}

// gsoRefused reports whether err is a path's refusal of a segmented
// message, which its datagrams sent one by one would not meet.
func gsoRefused(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.EIO)
}

// gsoAfter returns the largest datagram to send segmented after a path
// refused segments of seg bytes with err, from max: none after EIO (IPsec,
// or a device that cannot checksum, refuses any), else a smaller one (the
// segment did not fit the path's MTU).
func gsoAfter(err error, seg, max int) int {
	if errors.Is(err, syscall.EIO) {
		return 0
	}
	return min(max, seg-1)
}

// pack makes messages of the datagrams in slots [i, j), which go to one
// destination, into the send headers from h on, and returns how many it
// made: one per datagram if max is 0, else each datagram of at most max
// bytes with those after it of its size (and one shorter, but not empty,
// to end them), up to udpGSOMaxSegments and udpGSOMaxBytes, as one
// segmented message. h must not exceed i, so that the headers it writes
// are of slots it has read. Each message's first slot, datagrams and
// bytes are kept for the sender (first, count, size).
func (b *udpBatch) pack(h, i, j, max int) int {
	h0 := h
	for i < j {
		first, seg := i, int(b.recv[i].n)
		bytes := seg
		b.setOut(i, seg)
		i++
		if seg > 0 && seg <= max {
			for i < j && i-first < udpGSOMaxSegments {
				n := int(b.recv[i].n)
				if n == 0 || n > seg || bytes+n > udpGSOMaxBytes {
					break
				}
				b.setOut(i, n)
				bytes += n
				i++
				if n < seg {
					break // only the last segment may be shorter
				}
			}
		}
		m := &b.send[h].hdr
		m.Iov = &b.out[first]
		m.SetIovlen(i - first)
		if i-first > 1 {
			c := b.ctl[h*udpCmsgSpace : (h+1)*udpCmsgSpace]
			cm := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			cm.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = uint16(seg)
			m.Control = &c[0]
			m.SetControllen(udpCmsgSpace)
		} else {
			m.Control = nil
			m.SetControllen(0)
		}
		b.first[h], b.count[h], b.size[h] = first, i-first, bytes
		h++
	}
	return h - h0
}

// setOut points slot i's send vector at its datagram of n bytes.
func (b *udpBatch) setOut(i, n int) {
	b.out[i].Base = unsafe.SliceData(b.bufs[i])
	b.out[i].SetLen(n)
}

// segment returns the size of message h's segments: its first datagram's.
func (b *udpBatch) segment(h int) int { return int(b.recv[b.first[h]].n) }

// unsegmented returns a copy of message h's header for slot k alone, to
// send one of its datagrams again after the path refused the message.
func (b *udpBatch) unsegmented(h, k int) unix.Msghdr {
	m := b.send[h].hdr
	m.Iov = &b.out[k]
	m.SetIovlen(1)
	m.Control = nil
	m.SetControllen(0)
	return m
}
