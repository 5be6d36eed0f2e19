package watcher

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"unicode/utf8"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestClip(t *testing.T) {
	a63 := strings.Repeat("a", 63)
	for _, tt := range []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "15", "15"},
		{"container ID, exactly the limit", idRedis, idRedis},
		{"one byte over", strings.Repeat("a", 65), strings.Repeat("a", 64) + "…(65 bytes)"},
		{"megabytes", strings.Repeat("x", 3<<20), strings.Repeat("x", 64) + "…(3145728 bytes)"},
		// é is 2 bytes: bytes 63 and 64 would split it.
		{"2-byte rune across the limit", a63 + "é" + "zz", a63 + "…(67 bytes)"},
		{"2-byte rune ending at the limit", a63[1:] + "é" + "zz", a63[1:] + "é…(66 bytes)"},
		// 😀 is 4 bytes, starting at byte 62, 61 or 60.
		{"4-byte rune, 2 bytes in", a63[:62] + "😀z", a63[:62] + "…(67 bytes)"},
		{"4-byte rune, 3 bytes in", a63[:61] + "😀zz", a63[:61] + "…(67 bytes)"},
		{"4-byte rune, whole", a63[:60] + "😀zz", a63[:60] + "😀…(66 bytes)"},
		{"all 4-byte runes", strings.Repeat("😀", 20), strings.Repeat("😀", 16) + "…(80 bytes)"},
		// Invalid UTF-8: continuation bytes alone; at most 3 are
		// stepped back over.
		{"invalid UTF-8", strings.Repeat("\x80", 70), strings.Repeat("\x80", 61) + "…(70 bytes)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := clip(tt.in)
			assert.Equal(t, tt.want, got)
			if utf8.ValidString(tt.in) {
				assert.True(t, utf8.ValidString(got), "a valid value stays valid")
			}
		})
	}
}

// Docker copies a container's labels over its events' attributes, and a
// label can hold megabytes: nothing of that size reaches the logs, nor does
// a name of that size.
func TestLoggedValuesAreClipped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 4 << 20
		huge := strings.Repeat(" ", size-2) + "15" // still a stop signal
		longName := strings.Repeat("n", size)
		core, logs := observer.New(zapcore.DebugLevel)
		f := newFake(
			ctr(idAmb, longName, withNet("app", "n-app", "172.18.0.2")),
			ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3"), withLabels("signal", huge, "container", huge)),
		)
		f.inspect[idAmb] = container.InspectResponse{HostConfig: &container.HostConfig{}}
		w := &Watcher{Client: f, SelfIDs: []string{idAmb}, Logger: zap.New(core)}
		start(t, w)
		take(t, w)

		f.send(t,
			containerEvent(events.ActionKill, idRedis, map[string]string{"signal": huge, "container": huge}),
			networkEvent(events.ActionDisconnect, "n-app", idRedis),
		)
		take(t, w)

		want := map[string]string{
			"own container found":                    "name",
			"container stopping; no new connections": "signal",
			"container disconnected":                 "container",
		}
		for msg, key := range want {
			entries := logs.FilterMessage(msg).AllUntimed()
			require.Len(t, entries, 1, msg)
			got, ok := entries[0].ContextMap()[key].(string)
			require.True(t, ok, "%s: %s", msg, key)
			if msg == "container disconnected" {
				assert.Equal(t, idRedis, got, "a full ID is not clipped")
				continue
			}
			// Not the value itself in a failure: megabytes.
			suffix := fmt.Sprintf("…(%d bytes)", size)
			assert.Equal(t, maxLogValue+len(suffix), len(got), "%s: %s", msg, key)
			assert.True(t, strings.HasSuffix(got, suffix), "%s: %s ends %q", msg, key, got[max(0, len(got)-40):])
		}
		for _, e := range logs.AllUntimed() {
			for k, v := range e.ContextMap() {
				s := fmt.Sprint(v)
				assert.LessOrEqual(t, len(s), maxLogValue+len("…(4194304 bytes)"), "%q: %s", e.Message, k)
			}
		}
	})
}
