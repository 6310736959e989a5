package daemon

import (
	"log/slog"

	"github.com/tcpops/tcpops/conn"
)

// logRestores logs every override (a setting changed with a ttl) that
// runs out, with the setting in force again as read back.
func logRestores(t *conn.Table, log *slog.Logger) {
	t.OnRestore(func(r conn.Restored) {
		if r.Err != nil {
			log.Warn("override ended; previous setting could not be restored", "conid", r.ConnID, "what", r.What.String(), "err", r.Err)
			return
		}
		log.Info("override ended; previous setting restored", "conid", r.ConnID, "what", r.What.String(), "now", r.Value)
	})
}
