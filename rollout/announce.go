package rollout

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/upload"
)

// revertTimeout bounds putting the announcements back after a gate
// stopped the rollout.
const revertTimeout = time.Minute

// publishStore puts the image and its companions in Config.Store, once
// per rollout: a resumed run with the same image finds their URLs in the
// state and uploads nothing. The URLs are checked as the family would
// check the built-in server's, before any device is told one.
func (e *engine) publishStore(ctx context.Context) error {
	st := e.cfg.Store
	name := st.String()
	if e.rec.Serve.Bound != "" {
		return fmt.Errorf("rollout %s published its image with the built-in file server: resume it without --store", e.rec.ID)
	}
	// The record names the store from the start (Meta.Store); only once
	// the image is published there must a resumed run use the same.
	if r := e.rec.Store; r != nil && len(r.URLs) > 0 && r.Name != name {
		return fmt.Errorf("rollout %s published its image to %s, not %s: resume it with the same --store", e.rec.ID, r.Name, name)
	}
	if err := e.checkFamily(""); err != nil {
		return err
	}
	var urls map[string]string
	if r := e.rec.Store; r != nil && r.SHA256 == e.hash && hasAll(r.URLs, e.files) {
		urls = r.URLs // published by the run this one resumes
	} else {
		u, err := st.PutImage(ctx, e.files)
		if err != nil {
			return fmt.Errorf("cannot publish the image to %s: %s", name, oneLine(err))
		}
		urls = u
	}
	names := slices.Sorted(maps.Keys(e.files))
	for _, n := range names {
		if u, err := url.Parse(urls[n]); err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("the store %s gave no http:// or https:// URL for %s", name, n)
		}
	}
	if c, ok := e.cfg.Family.(URLChecker); ok {
		// Every URL a device may derive (companions beside the image),
		// the image's last: a checker may keep what it saw of it.
		names = slices.DeleteFunc(names, func(n string) bool { return n == e.img.Name })
		for _, n := range append(names, e.img.Name) {
			if err := c.CheckURL(urls[n]); err != nil {
				return err
			}
		}
	}
	e.url = urls[e.img.Name]
	e.token = urlFolder(e.url)
	return e.cfg.State.update(func(r *Record) {
		if r.Store == nil {
			r.Store = &StoreRecord{}
		}
		r.Store.Name, r.Store.SHA256, r.Store.URLs = name, e.hash, maps.Clone(urls)
		if r.Firmware.SHA256 == "" {
			r.Firmware.SHA256, r.Firmware.Size = e.hash, e.img.Size
		}
	})
}

// hasAll: urls has one for every served name.
func hasAll(urls map[string]string, files map[string]string) bool {
	for n := range files {
		if urls[n] == "" {
			return false
		}
	}
	return true
}

// urlFolder is the path segment before the file name in u when it looks
// like a hash (long enough to guess at): a device's words that repeat the
// URL then show it elided, as the built-in server's token is.
func urlFolder(u string) string {
	i := strings.LastIndex(u, "/")
	if i <= 0 {
		return ""
	}
	j := strings.LastIndex(u[:i], "/")
	if seg := u[j+1 : i]; len(seg) >= 16 {
		return seg
	}
	return ""
}

// checkAnnounce asks an Announcer family for every device's announcements
// once before anything is told, so that what it cannot announce (a chip
// it cannot name, a name that cannot be served) ends the run at once.
func (e *engine) checkAnnounce() error {
	a, ok := e.cfg.Family.(Announcer)
	if !ok {
		return nil
	}
	files, err := a.Announce(e.devices(e.devs), e.img, e.url, e.img.MD5)
	if err != nil {
		return err
	}
	for name := range files {
		if !fileserve.ValidName(name) {
			return fmt.Errorf("cannot publish an announcement under the name %q: use letters, digits, '.', '_' and '-' (not first)", name)
		}
	}
	return nil
}

func (e *engine) devices(w []*dev) []Device {
	out := make([]Device, len(w))
	for i, d := range w {
		out[i] = d.d
	}
	return out
}

// serveAgain serves from the built-in file server, again, what a run this
// one resumes announced: the devices in flight may poll it still.
func (e *engine) serveAgain() {
	if e.srv == nil {
		return
	}
	for _, a := range e.ann {
		if a.State == AnnouncementWritten && a.Body != nil {
			e.srv.SetOpen(a.Name, a.Body)
		}
	}
}

// announceWave publishes the announcements of wave w's devices (an
// Announcer family), before any of them is readied.
func (e *engine) announceWave(ctx context.Context, w []*dev) error {
	a, ok := e.cfg.Family.(Announcer)
	if !ok {
		return nil
	}
	files, err := a.Announce(e.devices(w), e.img, e.url, e.img.MD5)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := e.writeAnnouncement(ctx, name, files[name]); err != nil {
			return err
		}
	}
	return nil
}

// writeAnnouncement writes one announcement. Before the rollout first
// writes a name, the state keeps what the name held (a store's content;
// the built-in server's: none), so that a gate can put it back.
func (e *engine) writeAnnouncement(ctx context.Context, name string, body []byte) error {
	if !fileserve.ValidName(name) {
		return fmt.Errorf("cannot publish an announcement under the name %q: use letters, digits, '.', '_' and '-' (not first)", name)
	}
	st := e.cfg.Store
	i := slices.IndexFunc(e.ann, func(a AnnouncementRecord) bool { return a.Name == name })
	if i < 0 {
		// Written before the file: a gate must find what to put back
		// whenever the write happened.
		rec := AnnouncementRecord{Name: name, State: AnnouncementWritten}
		if st != nil {
			prev, ok, err := st.GetFile(ctx, name)
			if err != nil {
				return fmt.Errorf("cannot read %s in %s (to keep what it holds before writing it): %s", name, st, oneLine(err))
			}
			rec.Existed, rec.Previous = ok, prev
		}
		e.ann = append(e.ann, rec)
		i = len(e.ann) - 1
		if err := e.cfg.State.update(e.recordAnn()); err != nil {
			e.ann = e.ann[:i]
			return fmt.Errorf("%s not written: %s", name, oneLine(err))
		}
	}
	var u string
	if st != nil {
		var err error
		if u, err = st.PutFile(ctx, name, body); err != nil {
			return fmt.Errorf("cannot write %s to %s: %s", name, st, oneLine(err))
		}
	} else {
		e.srv.SetOpen(name, body)
		u = e.openURL(name)
	}
	a := &e.ann[i]
	a.URL, a.Body, a.State, a.Error = u, slices.Clone(body), AnnouncementWritten, ""
	e.save(e.recordAnn())
	e.log.Info("announced the image", "file", name, "url", u)
	return nil
}

// openURL is where devices poll an announcement on the built-in server.
func (e *engine) openURL(name string) string {
	if e.cfg.PublicURL != "" {
		return strings.TrimRight(e.cfg.PublicURL, "/") + "/" + name
	}
	return e.srv.OpenURL(name)
}

// recordAnn is the state change that records the announcements as they
// are now.
func (e *engine) recordAnn() func(*Record) {
	ann := slices.Clone(e.ann)
	return func(r *Record) { r.Announcements = ann }
}

// revert puts back what each announcement held before the rollout wrote
// it (or removes it), after a gate stopped the rollout: devices it left
// must not find the image announced. It returns what it did, one phrase
// per name ("manifest canary.json put back").
func (e *engine) revert(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revertTimeout)
	defer cancel()
	var said []string
	for i := range e.ann {
		a := &e.ann[i]
		if a.State != AnnouncementWritten && a.State != AnnouncementNotReverted {
			continue
		}
		var err error
		switch st := e.cfg.Store; {
		case st != nil && a.Existed:
			_, err = st.PutFile(ctx, a.Name, a.Previous)
		case st != nil:
			err = st.DeleteFile(ctx, a.Name)
		case e.srv != nil:
			e.srv.SetOpen(a.Name, nil)
		}
		switch {
		case err != nil:
			a.State, a.Error = AnnouncementNotReverted, oneLine(err)
			said = append(said, "manifest "+a.Name+" could not be put back ("+a.Error+")")
			e.log.Warn("the rollout stopped, but its announcement could not be put back", "file", a.Name, "err", a.Error)
		case a.Existed:
			a.State = AnnouncementPutBack
			said = append(said, "manifest "+a.Name+" put back")
			e.log.Info("the rollout stopped: announcement put back as it was", "file", a.Name)
		default:
			a.State = AnnouncementRemoved
			said = append(said, "manifest "+a.Name+" removed")
			e.log.Info("the rollout stopped: announcement removed (there was none before)", "file", a.Name)
		}
	}
	if len(said) > 0 {
		e.save(e.recordAnn())
	}
	return said
}

// ready waits until the device shows it saw the announcement (a Readier
// family), holding no slot. An error ends the device failed, never
// commanded; false then, or when ctx ended or a gate stopped the rollout
// (the device is then left not started).
func (e *engine) ready(ctx context.Context, d *dev, rd Readier, spec DeviceSpec) bool {
	e.emit(d, upload.Event{Phase: upload.PhaseChecking, Message: "waiting for the device to see the image announced"})
	for {
		if e.waitLink(ctx) != nil {
			return false
		}
		_, gen, _ := e.link()
		rctx, cancel := context.WithCancel(ctx)
		go func() {
			// A gate that stops the rollout ends every wait.
			select {
			case <-e.stopCh:
				cancel()
			case <-rctx.Done():
			}
		}()
		err := rd.Ready(rctx, d.d)
		cancel()
		if ctx.Err() != nil || e.stopped() != "" {
			return false
		}
		if err == nil {
			return true
		}
		if up, now, _ := e.link(); !up || now != gen {
			// The link went down meanwhile: what the device told may be
			// lost. Wait again once it is back.
			e.log.Debug("wait for the announcement lost to a link outage; waiting again", "device", d.d.label(), "err", err)
			continue
		}
		e.finish(ctx, d, Verdict{Outcome: upload.OutcomeFailed, Class: upload.ClassTimeout,
			Message: oneLine(err) + " (not commanded)"}, spec)
		return false
	}
}
