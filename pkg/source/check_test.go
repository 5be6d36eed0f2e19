package source

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseCheck(t *testing.T) {
	tcpDefault := Check{Kind: CheckTCP, Interval: 5 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
	for _, tt := range []struct {
		in      string
		want    Check
		wantErr string
	}{
		{in: "tcp", want: tcpDefault},
		{in: " tcp , interval=5s ,rise=1,fall=10,timeout=300ms",
			want: Check{Kind: CheckTCP, Interval: 5 * time.Second, Timeout: 300 * time.Millisecond, Rise: 1, Fall: 10}},
		{in: `send=PING\r\n,expect=+PONG`,
			want: Check{Kind: CheckSend, Send: "PING\r\n", Expect: "+PONG", Interval: 5 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}},
		{in: `expect=SSH-`, want: Check{Kind: CheckSend, Expect: "SSH-", Interval: 5 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}},
		{in: `send=a\x2cb\\\0,expect-regexp=^\+PONG\r?$,interval=250ms`,
			want: Check{Kind: CheckSend, Send: "a,b\\\x00", ExpectRegexp: `^\+PONG\r?$`, Interval: 250 * time.Millisecond, Timeout: 250 * time.Millisecond, Rise: 2, Fall: 3}},
		{in: "off", want: Check{}},
		{in: "", wantErr: "empty check"},
		{in: "http", wantErr: `unknown item "http"`},
		{in: "tcp,send=x,expect=y", wantErr: "give one kind"},
		{in: "send=PING", wantErr: "send needs expect"},
		{in: "interval=1s", wantErr: "no kind of check"},
		{in: "tcp,interval=1ms", wantErr: "interval: 1ms out of range 250ms..10m0s"},
		{in: "tcp,interval=eleven", wantErr: "want a duration"},
		{in: "tcp,interval=1s,timeout=2s", wantErr: "longer than the interval"},
		{in: "tcp,rise=0", wantErr: "rise"},
		{in: "tcp,fall=11", wantErr: "from 1 to 10"},
		{in: "tcp,tcp", wantErr: "given twice"},
		{in: "tcp=1", wantErr: "takes no value"},
		{in: `send=\q,expect=x`, wantErr: `unknown escape \q`},
		{in: `send=x\,expect=x`, wantErr: `lone \`},
		{in: `expect=x\`, wantErr: `lone \`},
		{in: `expect=\x4`, wantErr: `\x needs two hex digits`},
		{in: `expect=\xzz`, wantErr: "two hex digits"},
		{in: "expect=", wantErr: "expect: empty"},
		{in: "expect-regexp=(", wantErr: "expect-regexp"},
		{in: "expect=" + strings.Repeat("x", 257), wantErr: "longer than 256 bytes"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCheck(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			if got.Enabled() {
				again, err := ParseCheck(FormatCheck(got))
				require.NoError(t, err, FormatCheck(got))
				assert.Equal(t, got, again, "FormatCheck round trip")
			}
		})
	}
}

func FuzzParseCheck(f *testing.F) {
	for _, s := range []string{"tcp", "off", `send=PING\r\n,expect=+PONG`, "tcp,interval=5s,rise=1,fall=10,timeout=300ms",
		`expect-regexp=^\+PONG`, `send=\x2c\\,expect=\x00`, "tcp,tcp", `expect=x\`, "interval=1s", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCheck(s)
		if err != nil {
			if c != (Check{}) {
				t.Errorf("check %+v returned with error %v", c, err)
			}
			return
		}
		if !c.Enabled() {
			return
		}
		if c.Interval < minCheckInterval || c.Interval > maxCheckInterval || c.Timeout < minCheckTimeout || c.Timeout > c.Interval ||
			c.Rise < 1 || c.Rise > maxCheckCount || c.Fall < 1 || c.Fall > maxCheckCount ||
			len(c.Send) > maxCheckBytes || len(c.Expect) > maxCheckBytes || len(c.ExpectRegexp) > maxCheckBytes {
			t.Errorf("ParseCheck(%q) = %+v, out of bounds", s, c)
		}
		if c.Kind == CheckSend && c.Expect == "" && c.ExpectRegexp == "" {
			t.Errorf("ParseCheck(%q) = %+v: a send check without an expectation", s, c)
		}
		again, err := ParseCheck(FormatCheck(c))
		if err != nil || again != c {
			t.Errorf("canonical form %q of %+v parsed to %+v, %v", FormatCheck(c), c, again, err)
		}
	})
}
