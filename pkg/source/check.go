package source

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Check is an active health check of a backend, as a route or a claimer's
// ambassador.check label asks for it: the controller runs one checker per
// address and check, and a backend with a Check enters a route's set only
// once it has passed Rise times in a row, and leaves it after Fall
// failures in a row. The zero Check is none. Values are validated and
// clipped by the parser that made them (ParseCheck).
type Check struct {
	// Kind is CheckTCP (the connect is the check) or CheckSend (connect,
	// send Send, expect an answer); "" is no check.
	Kind string
	// Send is written once connected; may be empty (a banner protocol).
	Send string
	// Expect is a prefix the answer must start with; ExpectRegexp a
	// regular expression (RE2) it must match. A CheckSend has one.
	Expect       string
	ExpectRegexp string
	// Interval is the time between checks, Timeout a check's limit.
	Interval, Timeout time.Duration
	// Rise is the number of passes in a row that put a backend in;
	// Fall the number of failures in a row that take it out.
	Rise, Fall int
}

// The kinds of Check.
const (
	CheckTCP  = "tcp"
	CheckSend = "send"
	// CheckOff checks nothing, and says so: a backend labelled
	// ambassador.check=off is not given its route's check.
	CheckOff = "off"
)

// Enabled reports whether c checks anything.
func (c Check) Enabled() bool { return c.Kind == CheckTCP || c.Kind == CheckSend }

// The defaults and bounds of a health check. A check's spec comes from a
// label any container on the network may carry, so every value is
// clipped: no interval below minCheckInterval (a hostile label cannot
// make the ambassador hammer anything), no unbounded send or answer.
const (
	defaultCheckInterval = 5 * time.Second
	defaultCheckTimeout  = time.Second
	defaultCheckRise     = 2
	defaultCheckFall     = 3

	minCheckInterval = 250 * time.Millisecond
	maxCheckInterval = 10 * time.Minute
	minCheckTimeout  = 10 * time.Millisecond
	maxCheckCount    = 10  // rise and fall
	maxCheckBytes    = 256 // send, expect, expect-regexp
)

// ParseCheck parses a health check spec, the value of --check (after its
// LISTEN:) and of the ambassador.check label: items separated by commas,
//
//	tcp                  the connect is the check
//	send=BYTES           send BYTES once connected
//	expect=BYTES         the answer must start with BYTES
//	expect-regexp=RE     the answer (its first 512 bytes) must match RE (RE2)
//	interval=D           between checks (default 5s, 250ms..10m)
//	timeout=D            a check's limit (default 1s, at most the interval)
//	rise=N               passes in a row that put a backend in (default 2, 1..10)
//	fall=N               failures in a row that take it out (default 3, 1..10)
//
// e.g. "tcp", "tcp,interval=5s" or `send=PING\r\n,expect=+PONG`. BYTES
// may hold \r, \n, \t, \\ and \xHH (a comma is \x2c); a send or expect
// gives a send/expect check, which needs an expect or an expect-regexp.
// "off" is no check. Values out of bounds are errors, so that a typo is
// seen rather than clipped silently.
func ParseCheck(s string) (Check, error) {
	s = strings.TrimSpace(s)
	if s == CheckOff {
		return Check{}, nil
	}
	if s == "" {
		return Check{}, errors.New(`empty check: want tcp, or send=...,expect=... (or off)`)
	}
	var c Check
	seen := map[string]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		key, value, hasValue := strings.Cut(item, "=")
		if seen[key] {
			return Check{}, fmt.Errorf("%s given twice", strconv.Quote(key))
		}
		seen[key] = true
		var err error
		switch key {
		case "tcp":
			if hasValue {
				err = errors.New("takes no value")
			}
		case "send":
			c.Send, err = unescapeCheckBytes(value)
		case "expect":
			c.Expect, err = unescapeCheckBytes(value)
			if err == nil && c.Expect == "" {
				err = errors.New("empty")
			}
		case "expect-regexp":
			switch {
			case len(value) > maxCheckBytes:
				err = fmt.Errorf("longer than %d bytes", maxCheckBytes)
			case value == "":
				err = errors.New("empty")
			default:
				_, err = regexp.Compile(value)
				c.ExpectRegexp = value
			}
		case "interval":
			c.Interval, err = parseCheckDuration(value, minCheckInterval, maxCheckInterval)
		case "timeout":
			c.Timeout, err = parseCheckDuration(value, minCheckTimeout, maxCheckInterval)
		case "rise":
			c.Rise, err = parseCheckCount(value)
		case "fall":
			c.Fall, err = parseCheckCount(value)
		default:
			return Check{}, fmt.Errorf("unknown item %s: want tcp, send=, expect=, expect-regexp=, interval=, timeout=, rise= or fall=", strconv.Quote(item))
		}
		if err != nil {
			return Check{}, fmt.Errorf("%s: %w", key, err)
		}
	}
	send := seen["send"] || seen["expect"] || seen["expect-regexp"]
	switch {
	case send && seen["tcp"]:
		return Check{}, errors.New("tcp and send/expect: give one kind of check")
	case send && c.Expect == "" && c.ExpectRegexp == "":
		return Check{}, errors.New("send needs expect= or expect-regexp=: what answer passes")
	case send:
		c.Kind = CheckSend
	case seen["tcp"]:
		c.Kind = CheckTCP
	default:
		return Check{}, errors.New("no kind of check: give tcp, or send=...,expect=...")
	}
	if c.Interval == 0 {
		c.Interval = defaultCheckInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(defaultCheckTimeout, c.Interval)
	}
	if c.Timeout > c.Interval {
		return Check{}, fmt.Errorf("timeout %s is longer than the interval %s", c.Timeout, c.Interval)
	}
	if c.Rise == 0 {
		c.Rise = defaultCheckRise
	}
	if c.Fall == 0 {
		c.Fall = defaultCheckFall
	}
	return c, nil
}

func parseCheckDuration(s string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: want a duration such as 2s or 500ms", strconv.Quote(s))
	}
	if d < lo || d > hi {
		return 0, fmt.Errorf("%s out of range %s..%s", d, lo, hi)
	}
	return d, nil
}

func parseCheckCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxCheckCount {
		return 0, fmt.Errorf("%s: want an integer from 1 to %d", strconv.Quote(s), maxCheckCount)
	}
	return n, nil
}

// unescapeCheckBytes turns the escapes of a check's bytes into bytes:
// \r, \n, \t, \0, \\ and \xHH; any other backslash is an error. The
// result is at most maxCheckBytes long.
func unescapeCheckBytes(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch != '\\' {
			b.WriteByte(ch)
			continue
		}
		if i+1 >= len(s) {
			return "", errors.New(`a lone \ at the end (write \\)`)
		}
		i++
		switch s[i] {
		case 'r':
			b.WriteByte('\r')
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case '0':
			b.WriteByte(0)
		case '\\':
			b.WriteByte('\\')
		case 'x':
			if i+2 >= len(s) {
				return "", errors.New(`\x needs two hex digits`)
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return "", fmt.Errorf(`\x%s: want two hex digits`, s[i+1:i+3])
			}
			b.WriteByte(byte(v))
			i += 2
		default:
			return "", fmt.Errorf(`unknown escape \%c: want \r, \n, \t, \0, \\ or \xHH`, s[i])
		}
		if b.Len() > maxCheckBytes {
			break
		}
	}
	if b.Len() > maxCheckBytes {
		return "", fmt.Errorf("longer than %d bytes", maxCheckBytes)
	}
	return b.String(), nil
}

// FormatCheck renders c in the syntax ParseCheck reads, every value
// explicit: for the status and explain.
func FormatCheck(c Check) string {
	if !c.Enabled() {
		return CheckOff
	}
	var items []string
	if c.Kind == CheckTCP {
		items = append(items, "tcp")
	} else {
		if c.Send != "" {
			items = append(items, "send="+escapeCheckBytes(c.Send))
		}
		if c.Expect != "" {
			items = append(items, "expect="+escapeCheckBytes(c.Expect))
		}
		if c.ExpectRegexp != "" {
			items = append(items, "expect-regexp="+c.ExpectRegexp)
		}
	}
	items = append(items, "interval="+c.Interval.String(), "timeout="+c.Timeout.String(),
		"rise="+strconv.Itoa(c.Rise), "fall="+strconv.Itoa(c.Fall))
	return strings.Join(items, ",")
}

// escapeCheckBytes is the inverse of unescapeCheckBytes.
func escapeCheckBytes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '\r':
			b.WriteString(`\r`)
		case ch == '\n':
			b.WriteString(`\n`)
		case ch == '\t':
			b.WriteString(`\t`)
		case ch == '\\':
			b.WriteString(`\\`)
		case ch == ',' || ch < 0x20 || ch >= 0x7f:
			fmt.Fprintf(&b, `\x%02x`, ch)
		default:
			b.WriteByte(ch)
		}
	}
	return b.String()
}
