// Package dataproto is the wire protocol spoken by the data fixture
// (internal/dataserver) and by the e2e tests, the load generator
// (internal/load), the soak's clients (internal/soak) and the benchmark
// that drive it through an ambassador. It is stateless; every function is safe for concurrent use.
//
// A connection starts with a fixed 21-byte header written by the client:
//
//	magic "ADP1" | mode (1 byte) | seed (uint64, big endian) | reply length (uint64, big endian)
//
// In ModeIntegrity the client then sends any number of bytes and half-closes
// its side (CloseWrite). Only after reading that EOF does the server answer
// with the SHA-256 of everything it received after the header, followed by
// reply-length bytes of Stream(seed), and then it closes. A server answer
// therefore proves that the proxy forwarded both the payload and the
// half-close, and the reply proves the other direction.
//
// In ModeEcho the server copies everything back until EOF, then closes.
//
// In ModeWhoami the server first writes one line, its [Identity] (its name,
// the address the connection came to and when it accepted it), and then
// echoes as in ModeEcho. A client that only wants to know which server
// answered half-closes after the header and reads to EOF; one that keeps the
// connection open can go on exchanging echoes with that same server.
//
// Besides the data port, a server has an admin port ([AdminPort]) speaking
// HTTP: GET [StatsPath] returns its [Stats] as JSON, so a test can check
// that a server never received a byte without connecting to its data port,
// and POST [HealthPath]?ok=true|false makes its healthcheck pass or fail.
// POST [AcceptPath]?ok=false makes it stop accepting connections, which then
// wait in its listener's queue, as for an app too busy to accept, until
// ?ok=true or until it stops (its listener's close resets them).
package dataproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Magic opens every connection so a stray client gets a clear error.
const Magic = "ADP1"

// HeaderSize is the encoded size of a Header.
const HeaderSize = len(Magic) + 1 + 8 + 8

// Mode selects what the server does with a connection.
type Mode byte

// The modes a Header can carry.
const (
	ModeIntegrity Mode = 'I'
	ModeEcho      Mode = 'E'
	ModeWhoami    Mode = 'W'
)

// Header is the client's request. Seed and Reply are used by ModeIntegrity
// only.
type Header struct {
	Mode  Mode
	Seed  uint64 // seed of the Stream the server replies with
	Reply uint64 // number of Stream bytes the server replies with
}

// Encode returns the wire form of h.
func (h Header) Encode() []byte {
	b := make([]byte, 0, HeaderSize)
	b = append(b, Magic...)
	b = append(b, byte(h.Mode))
	b = binary.BigEndian.AppendUint64(b, h.Seed)
	return binary.BigEndian.AppendUint64(b, h.Reply)
}

// ReadHeader reads and validates a header from r.
func ReadHeader(r io.Reader) (Header, error) {
	var b [HeaderSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Header{}, fmt.Errorf("read header: %w", err)
	}
	if string(b[:len(Magic)]) != Magic {
		return Header{}, errors.New("read header: bad magic")
	}
	h := Header{
		Mode:  Mode(b[len(Magic)]),
		Seed:  binary.BigEndian.Uint64(b[len(Magic)+1:]),
		Reply: binary.BigEndian.Uint64(b[len(Magic)+9:]),
	}
	if h.Mode != ModeIntegrity && h.Mode != ModeEcho && h.Mode != ModeWhoami {
		return Header{}, fmt.Errorf("read header: unknown mode %q", h.Mode)
	}
	return h, nil
}

// Stream returns an endless deterministic pseudo-random byte stream: the
// same seed yields the same bytes on both ends, so neither side has to ship
// or store the expected data. ChaCha8 is used because it is fast enough
// (several GB/s) not to be the bottleneck of a throughput measurement.
func Stream(seed uint64) io.Reader {
	var key [32]byte
	binary.BigEndian.PutUint64(key[:], seed)
	return rand.NewChaCha8(key)
}

// Identity is a server's answer in ModeWhoami: who answered, and where and
// when the connection arrived. Containers share the host's clock, so
// Accepted can be compared with the host's and the engine's timestamps.
type Identity struct {
	Name      string         // the server's name (dataserver -name); no spaces
	Local     netip.AddrPort // the address the client connected to, as the server saw it
	Accepted  time.Time      // when the server accepted the connection
	Listening time.Time      // when the server started listening on its data port
}

// maxIdentity bounds an identity line, so a stray peer cannot make a reader
// buffer without end.
const maxIdentity = 512

// Encode returns the wire form of id: "NAME ADDR:PORT ACCEPTED LISTENING\n",
// the times in Unix nanoseconds.
func (id Identity) Encode() []byte {
	return fmt.Appendf(nil, "%s %s %d %d\n", id.Name, id.Local, id.Accepted.UnixNano(), id.Listening.UnixNano())
}

// ReadIdentity reads and parses one identity line from r.
func ReadIdentity(r *bufio.Reader) (Identity, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) || len(line) >= maxIdentity {
			return Identity{}, errors.New("read identity: line too long")
		}
		return Identity{}, fmt.Errorf("read identity: %w", err)
	}
	if len(line) > maxIdentity {
		return Identity{}, errors.New("read identity: line too long")
	}
	f := strings.Fields(string(line))
	if len(f) != 4 {
		return Identity{}, fmt.Errorf("read identity: want 4 fields, got %q", line)
	}
	local, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return Identity{}, fmt.Errorf("read identity: address: %w", err)
	}
	var times [2]time.Time
	for i, field := range f[2:] {
		ns, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return Identity{}, fmt.Errorf("read identity: time: %w", err)
		}
		times[i] = time.Unix(0, ns)
	}
	return Identity{Name: f[0], Local: local, Accepted: times[0], Listening: times[1]}, nil
}

// The admin port and its paths.
const (
	AdminPort  = 9001
	StatsPath  = "/stats"
	HealthPath = "/health"
	AcceptPath = "/accept"
)

// Stats are a server's counters since it started, served as JSON at
// StatsPath on its admin port.
type Stats struct {
	Name    string `json:"name"`
	Conns   uint64 `json:"conns"`   // connections accepted on the data port
	Bytes   uint64 `json:"bytes"`   // bytes received on the data port, headers included
	Healthy bool   `json:"healthy"` // whether its healthcheck passes
}
