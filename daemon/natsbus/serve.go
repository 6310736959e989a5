package natsbus

import (
	"regexp"
	"strconv"
	"strings"

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
	if perr != nil {
		var opts []micro.RespondOpt
		if perr.Code == rpc.CodeDenied && !admin {
			opts = append(opts, micro.WithHeaders(micro.Headers{fleet.HeaderAdminOnly: {"true"}}))
		}
		if err := req.Error(strconv.FormatInt(perr.Code, 10), perr.Message, body, opts...); err != nil {
			b.setErr(err)
		}
		return
	}
	msgs, err := fleet.EncodeReply(body, strings.Contains(h.Get(fleet.HeaderAcceptEncoding), "gzip"), b.nc.MaxPayload())
	if err != nil {
		req.Error(strconv.Itoa(rpc.CodeInternal), err.Error(), nil)
		return
	}
	if err := req.Respond(msgs[0].Data, micro.WithHeaders(micro.Headers(msgs[0].Header))); err != nil {
		b.setErr(err)
		return
	}
	for _, m := range msgs[1:] {
		m.Subject = req.Reply()
		if err := b.nc.PublishMsg(m); err != nil {
			b.setErr(err)
			return
		}
	}
}
