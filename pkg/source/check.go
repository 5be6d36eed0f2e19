package source

import "time"

// Check is an active health check of a backend, as a route or a claimer's
// ambassador.check label asks for it: the controller runs one checker per
// address and check, and a backend with a Check enters a route's set only
// once it has passed Rise times in a row, and leaves it after Fall
// failures in a row. The zero Check is none. Values are validated and
// clipped by the parser that made them (resolver.ParseCheck).
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
