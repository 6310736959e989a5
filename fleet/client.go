package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Options say how to reach NATS.
type Options struct {
	// URL is one server URL or several, comma-separated; user and
	// password may be in it (nats://ops:secret@host:4222).
	URL string
	// Creds is a credentials file (.creds) of an NATS user, if any.
	Creds string
	// CA is a PEM file of the CAs that signed tls:// servers' certificates.
	CA string
	// Name is the connection's name, as nats-server shows it.
	Name string
	// Reconnect keeps reconnecting when the server goes away (a long
	// follower); without it a lost connection ends the calls.
	Reconnect bool
}

// NATSOptions are the nats.go options for o (without handlers).
func (o Options) NATSOptions() []nats.Option {
	opts := []nats.Option{nats.Name(o.Name)}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.CA != "" {
		opts = append(opts, nats.RootCAs(o.CA))
	}
	return opts
}

// user is the NATS user o logs in as, for audit logs: the URL's, or the
// credentials file's name.
func (o Options) user() string {
	first, _, _ := strings.Cut(o.URL, ",")
	if u, err := url.Parse(strings.TrimSpace(first)); err == nil && u.User != nil && u.User.Username() != "" {
		return u.User.Username()
	}
	if o.Creds != "" {
		return "creds " + strings.TrimSuffix(filepath.Base(o.Creds), ".creds")
	}
	return ""
}

// Redact is a server URL list with passwords left out, for messages.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxx")
				parts[i] = u.String()
			}
		}
	}
	return strings.Join(parts, ",")
}

// DialError says NATS could not be reached.
type DialError struct {
	URL string
	Err error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("cannot reach NATS at %s: %v (is nats-server running? check --nats, --nats-creds, --nats-tls-ca)", Redact(e.URL), e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// NoAnswerError says a host did not answer: it does not serve on NATS (no
// responders) or not within the time allowed.
type NoAnswerError struct {
	Host string
	Err  error
}

func (e *NoAnswerError) Error() string {
	return fmt.Sprintf("host %s did not answer: %v", e.Host, e.Err)
}

func (e *NoAnswerError) Unwrap() error { return e.Err }

// DeniedError says nats-server refused the caller a subject: its user
// lacks the permission.
type DeniedError struct {
	Subject string
	Err     error
}

func (e *DeniedError) Error() string {
	hint := "the NATS user lacks the permission"
	if strings.HasPrefix(e.Subject, adminPrefix) {
		hint += "; changing methods are on tcpops.admin.HOST"
	}
	return fmt.Sprintf("nats-server refused %s: %v (%s)", e.Subject, e.Err, hint)
}

func (e *DeniedError) Unwrap() error { return e.Err }

// Conn is a client's connection to the fleet. Calls may be made from
// several goroutines.
type Conn struct {
	nc     *nats.Conn
	url    string
	user   string
	caller string

	// mu guards the field below.
	mu sync.Mutex
	// waiting are the calls in flight by subject, told of a permissions
	// violation on it (nats-server drops such a publish and says so
	// only in an asynchronous error).
	waiting map[string][]chan error
}

// Connect connects to NATS within ctx.
func Connect(ctx context.Context, o Options) (*Conn, error) {
	c := &Conn{url: o.URL, user: o.user(), caller: caller(), waiting: map[string][]chan error{}}
	opts := append(o.NATSOptions(), nats.ErrorHandler(c.asyncError), nats.PermissionErrOnSubscribe(true))
	if dl, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(max(time.Until(dl), time.Millisecond)))
	}
	if o.Reconnect {
		opts = append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
	} else {
		opts = append(opts, nats.NoReconnect())
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, &DialError{URL: o.URL, Err: err}
	}
	c.nc = nc
	return c, nil
}

// caller is login@machine of this process.
func caller() string {
	name := "uid" + fmt.Sprint(os.Getuid())
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	h, _ := os.Hostname()
	return name + "@" + h
}

// NATS is the connection underneath.
func (c *Conn) NATS() *nats.Conn { return c.nc }

// Close closes the connection.
func (c *Conn) Close() { c.nc.Close() }

// publishDenied is compiled when first needed: every tcpopsctl run links
// this package, and most never use NATS.
var publishDenied = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`(?i)permissions violation for publish to "([^"]+)"`)
})

// asyncError fails the calls whose request nats-server refused.
func (c *Conn) asyncError(_ *nats.Conn, _ *nats.Subscription, err error) {
	m := publishDenied().FindStringSubmatch(err.Error())
	if m == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.waiting[m[1]] {
		select {
		case ch <- err:
		default:
		}
	}
}

// deniable returns ctx cancelled with a *DeniedError (its cause) as soon
// as nats-server refuses a publish to subject, and what to call once the
// request is over.
func (c *Conn) deniable(ctx context.Context, subject string) (context.Context, func()) {
	denied := c.watch(subject)
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case err := <-denied:
			cancel(&DeniedError{Subject: subject, Err: err})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel(nil)
		c.unwatch(subject, denied)
	}
}

func (c *Conn) watch(subject string) chan error {
	ch := make(chan error, 1)
	c.mu.Lock()
	c.waiting[subject] = append(c.waiting[subject], ch)
	c.mu.Unlock()
	return ch
}

func (c *Conn) unwatch(subject string, ch chan error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiting[subject] = slices.DeleteFunc(c.waiting[subject], func(x chan error) bool { return x == ch })
	if len(c.waiting[subject]) == 0 {
		delete(c.waiting, subject)
	}
}

// Call calls method on host: on its read subject, and on its admin
// subject when the daemon says the method changes connections. The
// result is JSON; an error of the daemon is an *rpc.Error, a host that
// does not answer a *NoAnswerError, a refusal of nats-server a
// *DeniedError.
func (c *Conn) Call(ctx context.Context, host, method string, params json.RawMessage) (json.RawMessage, error) {
	req := EncodeRequest(method, params)
	raw, adminOnly, err := c.request(ctx, host, RPCSubject(host), req)
	if adminOnly {
		raw, _, err = c.request(ctx, host, AdminSubject(host), req)
	}
	return raw, err
}

// request sends one request to subject and reads its reply.
func (c *Conn) request(ctx context.Context, host, subject string, body []byte) (json.RawMessage, bool, error) {
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, false, err
	}
	defer sub.Unsubscribe()
	ctx, done := c.deniable(ctx, subject)
	defer done()
	m := nats.NewMsg(subject)
	m.Reply = inbox
	m.Data = body
	m.Header.Set(HeaderAcceptEncoding, "gzip")
	m.Header.Set(HeaderCaller, c.caller)
	if c.user != "" {
		m.Header.Set(HeaderUser, c.user)
	}
	if err := c.nc.PublishMsg(m); err != nil {
		return nil, false, &NoAnswerError{Host: host, Err: err}
	}
	start := time.Now()
	next := func() (*nats.Msg, error) {
		m, err := sub.NextMsgWithContext(ctx)
		switch {
		case err == nil:
			return m, nil
		case errors.Is(err, nats.ErrNoResponders):
			return nil, &NoAnswerError{Host: host, Err: fmt.Errorf("nothing serves %s (is tcpops running there with --nats?)", subject)}
		case context.Cause(ctx) != nil && !errors.Is(context.Cause(ctx), context.Canceled) && !errors.Is(context.Cause(ctx), context.DeadlineExceeded):
			return nil, context.Cause(ctx)
		case errors.Is(err, context.DeadlineExceeded):
			return nil, &NoAnswerError{Host: host, Err: fmt.Errorf("no answer within %s", time.Since(start).Round(time.Millisecond))}
		case errors.Is(err, nats.ErrPermissionViolation):
			return nil, &DeniedError{Subject: inbox, Err: err}
		case errors.Is(err, context.Canceled):
			return nil, err
		}
		return nil, &NoAnswerError{Host: host, Err: err}
	}
	first, err := next()
	if err != nil {
		return nil, false, err
	}
	raw, err := DecodeReply(first, next)
	return raw, first.Header.Get(HeaderAdminOnly) != "", err
}

// Transport is a client.Transport to one host over c. Closing it leaves c
// open.
func (c *Conn) Transport(host string) *Transport { return &Transport{c: c, host: host} }

// Transport carries calls to one host.
type Transport struct {
	c    *Conn
	host string
}

// RoundTrip calls method on the host.
func (t *Transport) RoundTrip(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	return t.c.Call(ctx, t.host, method, params)
}

// Close does nothing: the connection is the Conn's.
func (t *Transport) Close() error { return nil }
