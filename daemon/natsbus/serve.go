package natsbus

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/tcpops/tcpops/daemon/control"
	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/rpc"
)

var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// serve adds the micro service: tcpops.rpc.HOST answers the read-only
// methods, tcpops.admin.HOST every method. Who may publish to which is
// nats-server's to say (its users' permissions).
func (b *Bus) serve() error {
	// micro wants SemVer: a tag or pseudo-version less its v, else
	// 0.0.0-devel and the like.
	version := strings.TrimPrefix(rpc.Build().Version, "v")
	if !semver.MatchString(version) {
		version = "0.0.0-" + strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
				return r
			}
			return '-'
		}, version)
	}
	svc, err := micro.AddService(b.nc, micro.Config{
		Name:        fleet.ServiceName,
		Version:     version,
		Description: "tcpops connection table of " + b.cfg.Host + ", JSON-RPC 2.0 as on the control socket",
		Metadata:    map[string]string{"host": b.cfg.Host, "boot": b.boot},
	})
	if err != nil {
		return err
	}
	b.svc = svc
	if err := svc.AddEndpoint("rpc", b.handler(false), micro.WithEndpointSubject(fleet.RPCSubject(b.cfg.Host)),
		micro.WithEndpointMetadata(map[string]string{"access": "read-only methods"})); err != nil {
		svc.Stop()
		return err
	}
	if err := svc.AddEndpoint("admin", b.handler(true), micro.WithEndpointSubject(fleet.AdminSubject(b.cfg.Host)),
		micro.WithEndpointMetadata(map[string]string{"access": "every method"})); err != nil {
		svc.Stop()
		return err
	}
	return nil
}

// handler answers each request on a goroutine of its own (a list of
// thousands of connections does not hold up a state), up to cap(b.sem)
// at once.
func (b *Bus) handler(admin bool) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		b.reqMu.Lock()
		if b.stopping {
			b.reqMu.Unlock()
			return
		}
		b.reqs.Add(1)
		b.reqMu.Unlock()
		b.sem <- struct{}{}
		go func() {
			defer b.reqs.Done()
			defer func() { <-b.sem }()
			b.answer(req, admin)
		}()
	})
}

func (b *Bus) answer(req micro.Request, admin bool) {
	b.requests.Add(1)
	h := req.Headers()
	r, perr := fleet.ParseRequest(req.Data())
	var res []byte
	if perr == nil {
		c := control.Caller{Via: "nats", Admin: admin,
			Attrs: []any{"nats_user", h.Get(fleet.HeaderUser), "caller", h.Get(fleet.HeaderCaller), "subject", req.Subject()}}
		if !admin {
			c.DenyHint = "changing methods are served on " + fleet.AdminSubject(b.cfg.Host)
		}
		res, perr = b.cfg.Server.Do(*r.Method, r.Params, c)
	}
	body := fleet.Response(r.ID, res, perr)
	// The answer is published here rather than with req.Respond or
	// req.Error: micro's request is its handler's to answer before the
	// handler returns (it reads the request's error for its statistics
	// then), and this goroutine answers later. So micro's per-endpoint
	// error count stays 0; the daemon's own counters are in stats.
	if perr != nil {
		m := &nats.Msg{Subject: req.Reply(), Data: body, Header: nats.Header{
			micro.ErrorHeader:     {perr.Message},
			micro.ErrorCodeHeader: {strconv.FormatInt(perr.Code, 10)},
		}}
		if perr.Code == rpc.CodeDenied && !admin {
			m.Header.Set(fleet.HeaderAdminOnly, "true")
		}
		b.reply(m)
		return
	}
	msgs, err := fleet.EncodeReply(body, strings.Contains(h.Get(fleet.HeaderAcceptEncoding), "gzip"), b.nc.MaxPayload())
	if err != nil {
		b.reply(&nats.Msg{Subject: req.Reply(), Header: nats.Header{
			micro.ErrorHeader: {err.Error()}, micro.ErrorCodeHeader: {strconv.Itoa(rpc.CodeInternal)}}})
		return
	}
	for _, m := range msgs {
		m.Subject = req.Reply()
		if !b.reply(m) {
			return
		}
	}
}

// reply publishes one message of an answer; a failure is kept for stats.
func (b *Bus) reply(m *nats.Msg) bool {
	if err := b.nc.PublishMsg(m); err != nil {
		b.setErr(err)
		return false
	}
	return true
}
