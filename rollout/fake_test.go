package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// behaviour is how a fake device answers a command.
type behaviour int

const (
	succeed         behaviour = iota
	failThenSucceed           // the first download fails, the device keeps running
	failAlways                // every download fails
	rollback                  // writes, restarts, comes back on the old image
	neverBack                 // writes, restarts, never comes back
	twoStep                   // minimal image first, then the full one
	silentUpdate              // updates without a word: only the read tells
	hang                      // takes the command, then nothing
	noPreflight               // never answers
	current                   // already runs the target
	wrongChip                 // tells another chip than the image's
	loaderFails               // a two-step whose loader fails to fetch the full image
	flappy                    // its link flaps 100 times between its success and its boot
	startedLate               // tells it took the command only once its fetch ended (its link was down meanwhile)
	gzFallback                // an ESP8266 short of space: the image, its -minimal, then the -minimal's .gz (not served)
)

const (
	fakeOld = "14.2.0(tasmota)"
	fakeNew = "14.3.0(tasmota)"
	fakeMin = "14.3.0(minimal)"
)

type fakeDev struct {
	topic   string
	b       behaviour
	version string
	online  bool
	mac     string
	cmds    int
	urls    []string
	fetched []string      // names fetched with their status
	busy    bool          // commanded, or fetching, until its upgrade's last fetch ended
	gate    chan struct{} // a two-step waits on its loader until closed
	hold    chan struct{} // the fetch waits until closed
}

// fakeFamily is an in-memory family: devices follow scripted behaviours,
// fetch over real HTTP from the engine's file server, and report through
// Watch. Reports made while nobody watches are queued for the next Watch
// (a persistent session), unless lose is set.
type fakeFamily struct {
	t     testing.TB
	step  time.Duration
	mu    sync.Mutex
	devs  map[string]*fakeDev
	fn    func(Report)
	wctx  context.Context
	queue []Report
	lose  bool

	inflight, maxInflight int // devices busy: from a command, or any fetch, to the end of the upgrade's last fetch
	watches               int
	restores              map[string][]string
	rereads               map[string]int
	log                   []string // "preflight|command|<report kind> <topic>", in order

	// The link (see linkFake): while down, nothing is sent (commands and
	// restores wait for it), reads go unanswered, and reports are lost.
	down   bool
	linkCh chan struct{}

	// hooks, called without the lock
	afterPreflight  func(topic string)
	afterCommand    func(topic string)
	afterFetch      func(topic string)
	beforeCommand   func(topic string, n int) // n: the commands taken, this one included
	onReport        func(Report)
	beforeReport    func(Report)                                  // before the report is delivered
	beforeRestore   func(ctx context.Context, topic string) error // an error: the restore is not done
	duringPreflight func(topic string)                            // in Preflight, before it answers
	refuseCommand   func(topic string) error                      // an error: Command returns it and sends nothing
	onWatch         func(n int)
	wg              sync.WaitGroup
	stop            chan struct{}
}

func newFake(t testing.TB, bs ...behaviour) (*fakeFamily, []Device) {
	f := &fakeFamily{t: t, step: 15 * time.Millisecond, devs: map[string]*fakeDev{}, restores: map[string][]string{}, rereads: map[string]int{}}
	var devs []Device
	for i, b := range bs {
		topic := fmt.Sprintf("tasmota_%06X", i)
		v := fakeOld
		if b == current {
			v = fakeNew
		}
		f.devs[topic] = &fakeDev{topic: topic, b: b, version: v, online: true, mac: fmt.Sprintf("AA:BB:CC:00:00:%02X", i)}
		devs = append(devs, Device{Name: fmt.Sprintf("dev%d", i), Topic: topic})
	}
	f.stop = make(chan struct{})
	f.linkCh = make(chan struct{})
	t.Cleanup(f.wg.Wait)
	t.Cleanup(func() { close(f.stop) }) // first: no script waits forever on a failed test
	return f, devs
}

func (f *fakeFamily) Name() string { return "fake" }

func (f *fakeFamily) Watch(ctx context.Context, devs []Device, fn func(Report)) error {
	f.mu.Lock()
	f.fn, f.wctx = fn, ctx
	f.watches++
	q := f.queue
	f.queue = nil
	n := f.watches
	onWatch := f.onWatch
	f.mu.Unlock()
	for _, r := range q {
		fn(r)
	}
	if h := onWatch; h != nil {
		h(n)
	}
	return nil
}

func (f *fakeFamily) Discover(context.Context, time.Duration) ([]Device, error) { return nil, nil }

func facts2(ver, mac string) Facts {
	fc := facts(ver)
	u := "http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"
	fc.OtaURL = &u
	fc.MAC = mac
	fc.Chip = "esp8266"
	return fc
}

func (f *fakeFamily) Preflight(ctx context.Context, d Device) (Facts, error) {
	f.mu.Lock()
	fd := f.devs[d.Topic]
	f.log = append(f.log, "preflight "+d.Topic)
	fc := facts2(fd.version, fd.mac)
	if fd.b == wrongChip {
		fc.Chip = "esp32"
	}
	f.mu.Unlock()
	f.mu.Lock()
	afterPreflight, during := f.afterPreflight, f.duringPreflight
	f.mu.Unlock()
	if during != nil {
		during(d.Topic)
	}
	if f.isDown() {
		<-ctx.Done() // the read or its answer is lost
		return Facts{}, errors.New("no answer")
	}
	if h := afterPreflight; h != nil {
		h(d.Topic)
	}
	if fd.b == noPreflight {
		<-ctx.Done()
		return Facts{}, errors.New("no answer")
	}
	return fc, nil
}

func (f *fakeFamily) Reread(ctx context.Context, d Device) (Facts, error) {
	f.mu.Lock()
	fd := f.devs[d.Topic]
	f.rereads[d.Topic]++
	online, v := fd.online, fd.version
	f.mu.Unlock()
	if !online || f.isDown() {
		<-ctx.Done()
		return Facts{}, errors.New("no answer")
	}
	return facts2(v, fd.mac), nil
}

func (f *fakeFamily) Restore(ctx context.Context, d Device, u string) error {
	if !f.waitUp(ctx) {
		return errors.New("not sent: the link is down")
	}
	f.mu.Lock()
	h := f.beforeRestore
	f.mu.Unlock()
	if h != nil {
		if err := h(ctx, d.Topic); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores[d.Topic] = append(f.restores[d.Topic], u)
	return nil
}

func (f *fakeFamily) Companions(name string) []string {
	base := strings.TrimSuffix(name, ".bin")
	return []string{base + "-minimal.bin", name + ".gz"}
}

func (f *fakeFamily) Screen(fc Facts, img Image, have []string) string {
	// The test images carry no chip: the fake refuses what tells esp32.
	if fc.Chip == "esp32" {
		return "the image is for esp8266, the device tells esp32"
	}
	return ""
}

func (f *fakeFamily) ReadSource() string { return "Status 2" }

// linkFake is the fake family with a link (Linker) the test drops.
type linkFake struct{ *fakeFamily }

func (l linkFake) Link() (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.down, l.linkCh
}

// setLink takes the link down or brings it back.
func (f *fakeFamily) setLink(up bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = !up
	close(f.linkCh)
	f.linkCh = make(chan struct{})
}

func (f *fakeFamily) isDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down
}

// waitUp waits for the link, as a publish does; false when ctx ended.
func (f *fakeFamily) waitUp(ctx context.Context) bool {
	for {
		f.mu.Lock()
		down, ch := f.down, f.linkCh
		f.mu.Unlock()
		if !down {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// logged is where entry is in the fake's log, -1 when it is not.
func (f *fakeFamily) logged(entry string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Index(f.log, entry)
}

func (f *fakeFamily) commands(topic string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.devs[topic].cmds
}

func (f *fakeFamily) Command(ctx context.Context, d Device, url string) error {
	if !f.waitUp(ctx) {
		return errors.New("not sent: the link is down")
	}
	f.mu.Lock()
	refuse := f.refuseCommand
	f.mu.Unlock()
	if refuse != nil {
		if err := refuse(d.Topic); err != nil {
			return err
		}
	}
	f.mu.Lock()
	fd := f.devs[d.Topic]
	fd.cmds++
	fd.urls = append(fd.urls, url)
	f.log = append(f.log, "command "+d.Topic)
	n := fd.cmds
	f.busyLocked(fd)
	f.mu.Unlock()
	f.wg.Add(1)
	go f.script(fd, url, n)
	f.mu.Lock()
	afterCommand, beforeCommand := f.afterCommand, f.beforeCommand
	f.mu.Unlock()
	if h := beforeCommand; h != nil {
		h(d.Topic, n)
	}
	if h := afterCommand; h != nil {
		h(d.Topic)
	}
	return nil
}

// report delivers r now if someone watches, else queues (or loses) it.
func (f *fakeFamily) report(fd *fakeDev, k ReportKind, words, ver string) {
	r := Report{Topic: fd.topic, Kind: k, At: time.Now(), Words: words}
	f.mu.Lock()
	f.log = append(f.log, string(k)+" "+fd.topic)
	switch k {
	case ReportOffline:
		fd.online = false
	case ReportOnline:
		fd.online = true
	}
	if k == ReportBooted {
		r.Facts, r.Source = facts2(ver, fd.mac), "INFO1"
		fd.version, fd.online = ver, true
	}
	fn, ctx, onReport, beforeReport := f.fn, f.wctx, f.onReport, f.beforeReport
	if f.down {
		// Told while the link is down: lost (the devices publish at QoS 0).
		f.log[len(f.log)-1] = "lost " + f.log[len(f.log)-1]
		f.mu.Unlock()
		return
	}
	watching := fn != nil && ctx != nil && ctx.Err() == nil
	if !watching && !f.lose {
		f.queue = append(f.queue, r)
	}
	f.mu.Unlock()
	if h := beforeReport; h != nil {
		h(r)
	}
	if watching {
		fn(r)
	}
	if h := onReport; h != nil {
		h(r)
	}
}

// busyLocked counts fd among the devices busy fetching, once.
func (f *fakeFamily) busyLocked(fd *fakeDev) {
	if !fd.busy {
		fd.busy = true
		f.inflight++
		f.maxInflight = max(f.maxInflight, f.inflight)
	}
}

// fetchEnded: fd's upgrade fetches nothing more.
func (f *fakeFamily) fetchEnded(fd *fakeDev) {
	f.mu.Lock()
	if fd.busy {
		fd.busy = false
		f.inflight--
	}
	f.mu.Unlock()
}

// fetch gets url as an ESP8266 updater would; true on the whole file.
func (f *fakeFamily) fetch(fd *fakeDev, url string) bool {
	f.mu.Lock()
	f.busyLocked(fd) // every fetch counts, whatever commanded it
	f.mu.Unlock()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("x-ESP8266-STA-MAC", fd.mac)
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	ok := false
	if err == nil {
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ok = resp.StatusCode == 200 && n == resp.ContentLength && n > 0
	}
	f.mu.Lock()
	fd.fetched = append(fd.fetched, fmt.Sprintf("%s %v", url[strings.LastIndex(url, "/")+1:], ok))
	f.mu.Unlock()
	return ok
}

// restartInto is a written image's restart: success, the link lost for a
// step, then the boot on version.
func (f *fakeFamily) restartInto(fd *fakeDev, version string) {
	f.report(fd, ReportSuccess, "Successful. Restarting", "")
	f.report(fd, ReportOffline, "", "")
	time.Sleep(f.step)
	f.report(fd, ReportOnline, "", "")
	f.report(fd, ReportBooted, "", version)
}

func (f *fakeFamily) script(fd *fakeDev, url string, n int) {
	defer f.wg.Done()
	s := func() { time.Sleep(f.step) }
	s()
	if fd.b != startedLate {
		f.report(fd, ReportStarted, "Version 14.3.0 from "+url, "")
	}
	switch b := fd.b; {
	case b == hang:
		f.fetchEnded(fd)
		return
	case b == gzFallback:
		min := strings.TrimSuffix(url, ".bin") + "-minimal.bin"
		f.fetch(fd, url)
		f.fetch(fd, min)
		f.fetch(fd, min+".gz")
		f.fetch(fd, min+".gz")
		f.fetchEnded(fd)
		s() // the server tells a fetch's end once answered: the device's word comes later
		f.report(fd, ReportFailed, "Failed File Not Found (404)", "")
		return
	case b == failAlways || b == failThenSucceed && n == 1:
		s()
		f.fetchEnded(fd)
		f.report(fd, ReportFailed, "Failed. HTTP error: connection lost", "")
		return
	case b == silentUpdate:
		f.fetch(fd, url)
		f.fetchEnded(fd)
		f.mu.Lock()
		fd.version = fakeNew
		f.mu.Unlock()
		return
	case b == twoStep || b == loaderFails:
		min := strings.TrimSuffix(url, ".bin") + "-minimal.bin"
		if !f.fetch(fd, min) {
			f.fetchEnded(fd)
			f.report(fd, ReportFailed, "Failed. HTTP error: 404", "")
			return
		}
		// Still busy: the loader fetches the full image after its boot.
		f.restartInto(fd, fakeMin)
		if fd.gate != nil {
			// The test cancels the rollout while the device sits on its loader.
			select {
			case <-fd.gate:
			case <-f.stop:
				return
			}
		}
		s()
		ok := b == twoStep && f.fetch(fd, url)
		f.fetchEnded(fd)
		if !ok {
			f.report(fd, ReportFailed, "Failed. HTTP error: connection refused", "")
			return
		}
		f.restartInto(fd, fakeNew)
		return
	}
	if fd.hold != nil {
		select {
		case <-fd.hold:
		case <-f.stop:
			f.fetchEnded(fd)
			return
		}
	}
	ok := f.fetch(fd, url)
	f.fetchEnded(fd)
	s() // writing the flash: the file server has told the fetch's end
	if fd.b == startedLate {
		f.report(fd, ReportStarted, "Version 14.3.0 from "+url, "")
	}
	f.mu.Lock()
	afterFetch := f.afterFetch
	f.mu.Unlock()
	if h := afterFetch; h != nil {
		h(fd.topic)
	}
	if !ok {
		f.report(fd, ReportFailed, "Failed. HTTP error: connection refused", "")
		return
	}
	f.report(fd, ReportSuccess, "Successful. Restarting", "")
	if fd.b == flappy {
		for range 50 {
			f.report(fd, ReportOffline, "", "")
			f.report(fd, ReportOnline, "", "")
		}
	}
	f.report(fd, ReportOffline, "", "")
	s()
	switch fd.b {
	case neverBack:
		return
	case rollback:
		f.report(fd, ReportOnline, "", "")
		f.report(fd, ReportBooted, "", fakeOld)
		return
	}
	f.report(fd, ReportOnline, "", "")
	f.report(fd, ReportBooted, "", fakeNew)
}
