package dataproto

import (
	"bufio"
	"bytes"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, want := range []Header{
		{Mode: ModeIntegrity, Seed: 42, Reply: 100 << 20},
		{Mode: ModeEcho},
		{Mode: ModeWhoami},
	} {
		got, err := ReadHeader(bytes.NewReader(want.Encode()))
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
}

func TestReadHeaderRejects(t *testing.T) {
	for name, in := range map[string][]byte{
		"short":     []byte("ADP1I"),
		"bad magic": append([]byte("XXXX"), make([]byte, HeaderSize-4)...),
		"bad mode":  Header{Mode: 'Z'}.Encode(),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(in))
			assert.Error(t, err)
		})
	}
}

func TestStreamIsDeterministic(t *testing.T) {
	read := func(seed uint64) []byte {
		b := make([]byte, 4096)
		_, err := io.ReadFull(Stream(seed), b)
		require.NoError(t, err)
		return b
	}
	assert.Equal(t, read(1), read(1))
	assert.NotEqual(t, read(1), read(2))
}

func TestIdentityRoundTrip(t *testing.T) {
	want := Identity{Name: "web-2", Local: netip.MustParseAddrPort("10.1.2.3:9000"),
		Accepted: time.Unix(1700000000, 123456789), Listening: time.Unix(1699999999, 987654321)}
	r := bufio.NewReader(bytes.NewReader(append(want.Encode(), "echoed bytes"...)))
	got, err := ReadIdentity(r)
	require.NoError(t, err)
	assert.Equal(t, want.Name, got.Name)
	assert.Equal(t, want.Local, got.Local)
	assert.True(t, want.Accepted.Equal(got.Accepted), "accepted %v, want %v", got.Accepted, want.Accepted)
	assert.True(t, want.Listening.Equal(got.Listening), "listening %v, want %v", got.Listening, want.Listening)
	rest, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, "echoed bytes", string(rest), "what follows the line is left unread")
}

func TestReadIdentityRejects(t *testing.T) {
	for name, in := range map[string]string{
		"empty":         "",
		"no newline":    "web 10.0.0.1:9000 1",
		"missing field": "web 10.0.0.1:9000 1\n",
		"bad address":   "web 10.0.0.1 1 1\n",
		"bad time":      "web 10.0.0.1:9000 soon 1\n",
		"bad listening": "web 10.0.0.1:9000 1 soon\n",
		"too long":      strings.Repeat("x", 2*maxIdentity) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ReadIdentity(bufio.NewReaderSize(strings.NewReader(in), maxIdentity))
			assert.Error(t, err)
		})
	}
}
