package gateway

import (
	"log/slog"
	"os"
	"time"

	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
)

// reload re-reads the fleet file and applies it (rt.Reload, then the
// capacity homes); a file that does not load or validate, or that changes
// the capacity stores, is refused with the reason in the log and the running
// config stays. Without --config there is nothing to re-read.
func reload(rt *router.Server, store capacity.Store, path string, log *slog.Logger) {
	if path == "" {
		log.Info("SIGHUP ignored: serving the embedded demo fleet (no --config)")
		return
	}
	fleet, err := config.Load(path)
	if err == nil {
		err = checkHomes(store, fleet, log) // before anything changes
	}
	if err == nil {
		err = rt.Reload(fleet)
	}
	if err == nil {
		err = rehome(store, fleet)
	}
	if err != nil {
		log.Error("config reload rejected; the running config stays", "err", err)
	}
}

// modTime is the file's modification time (zero for "" or a file that cannot
// be read).
func modTime(path string) time.Time {
	if path == "" {
		return time.Time{}
	}
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}
