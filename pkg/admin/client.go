package admin

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ambassadord/ambassadord/pkg/admin/api"
)

// defaultClientTimeout bounds one request of a Client.
const defaultClientTimeout = 15 * time.Second

// Client talks to the daemon over its admin socket, as the CLI commands
// do, so that they work with `docker exec CONTAINER /ambassadord ...`.
// Before sending anything it checks who holds the socket (dialFirst): a
// process that took the socket's name is refused, not talked to. The zero
// value uses SocketAuto. A Client is safe for concurrent use.
type Client struct {
	// Socket is the admin socket's path, @NAME for an abstract socket, or
	// SocketAuto (SocketFile, then SocketAbstract); empty means SocketAuto.
	Socket string
	// Timeout bounds one request; zero means 15s.
	Timeout time.Duration
}

func (c *Client) socket() string { return cmp.Or(c.Socket, SocketAuto) }

// httpClient returns an HTTP client that dials the admin socket. Each
// request has a connection of its own: keeping it would only hold one of
// the daemon's few admin connections.
func (c *Client) httpClient() *http.Client {
	return &http.Client{
		Timeout: cmp.Or(c.Timeout, defaultClientTimeout),
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialFirst(ctx, socketPaths(c.socket()))
			},
		},
	}
}

// Ready returns nil when the daemon is ready (/readyz: first sync done,
// every route listening), else why not.
func (c *Client) Ready(ctx context.Context) error { return c.Get(ctx, "/readyz", nil) }

// Status returns the daemon's status document (/routes).
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var doc api.Status
	if err := c.Get(ctx, "/routes", &doc); err != nil {
		return nil, err
	}
	return &doc, nil
}

// Route returns one route's status, by name, listen port or target.
func (c *Client) Route(ctx context.Context, key string) (api.Route, error) {
	var r api.Route
	err := c.Get(ctx, "/routes/"+url.PathEscape(key), &r)
	return r, err
}

// Rewire sends a rewire; a refusal is an error carrying the daemon's
// reason.
func (c *Client) Rewire(ctx context.Context, req api.RewireRequest) (api.RewireReply, error) {
	var reply api.RewireReply
	err := c.Post(ctx, "/rewire", req, &reply)
	return reply, err
}

// Get fetches path into v (nil: the body is read and dropped). A non-2xx
// answer is an error carrying the daemon's message.
func (c *Client) Get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ambassadord"+path, nil)
	if err != nil {
		return err
	}
	return c.do(req, v)
}

// Post sends body as JSON to path, and reads the answer into v as Get
// does.
func (c *Client) Post(ctx context.Context, path string, body, v any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://ambassadord"+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, v)
}

func (c *Client) do(req *http.Request, v any) error {
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	return decodeReply(resp, v)
}

func decodeReply(resp *http.Response, v any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read the daemon's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e errorReply
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("the daemon answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(b, v)
}

// unreachable explains a failed request. A socket held by another process
// is said as it is: the daemon may well be running.
func (c *Client) unreachable(err error) error {
	var squat *untrustedSocketError
	if errors.As(err, &squat) {
		return squat
	}
	return fmt.Errorf("cannot reach the ambassadord daemon on its admin socket %s (is it running, in this container, with that --admin-socket?): %w",
		strings.Join(socketPaths(c.socket()), " or "), err)
}
