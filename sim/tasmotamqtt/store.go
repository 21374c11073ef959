package tasmotamqtt

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"io"
	"regexp"
	"sync"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/internal/tasmotafw"
)

// store is what a fleet shares about images: the bytes of downloads in
// flight, cut into sectors held once however many devices fetch them, and
// what each image is, worked out once. Hundreds of devices fetching the
// same image hold one copy of it, and none once they are done: a device
// keeps only what its image told.
type store struct {
	mu      sync.Mutex
	sectors map[string]*sector // key: the sector's bytes
	infos   map[infoKey]*imageInfo
}

type sector struct {
	data string
	refs int
}

type infoKey struct {
	sum  [32]byte
	chip string
}

// imageInfo is what an image is to a device of one chip.
type imageInfo struct {
	// ok: the device's updater accepts it; why: its error when not.
	ok  bool
	why string
	// foreign: an ESP8266 took an image of another chip (its updater cannot
	// tell): it is written, and the device never boots again.
	foreign bool
	// project and version the image tells ("" when it tells none); sizeKiB
	// is what it takes once running (inflated when gzip).
	project, version string
	sizeKiB          int
}

func newStore() *store {
	return &store{sectors: map[string]*sector{}, infos: map[infoKey]*imageInfo{}}
}

// sectorSize is the updater's buffer: one flash sector.
const sectorSize = 4096

// download is one fetch's bytes so far.
type download struct {
	s    *store
	held []*sector
	n    int64
	hash [32]byte
}

func (s *store) begin() *download { return &download{s: s} }

// add keeps b (at most one sector, the last one may be shorter).
func (d *download) add(b []byte) {
	d.s.mu.Lock()
	sec := d.s.sectors[string(b)] // no allocation for the lookup
	if sec == nil {
		sec = &sector{data: string(b)}
		d.s.sectors[sec.data] = sec
	}
	sec.refs++
	d.s.mu.Unlock()
	d.held = append(d.held, sec)
	d.n += int64(len(b))
}

// release drops the download's sectors.
func (d *download) release() {
	d.s.mu.Lock()
	for _, sec := range d.held {
		if sec.refs--; sec.refs == 0 {
			delete(d.s.sectors, sec.data)
		}
	}
	d.s.mu.Unlock()
	d.held = nil
}

// info is what the downloaded image is to a device of chip, worked out once
// per image and chip.
func (d *download) info(chip string) *imageInfo {
	h := sha256.New()
	for _, sec := range d.held {
		_, _ = io.WriteString(h, sec.data)
	}
	var key infoKey
	copy(key.sum[:], h.Sum(nil))
	key.chip = chip
	d.s.mu.Lock()
	in := d.s.infos[key]
	d.s.mu.Unlock()
	if in != nil {
		return in
	}
	var buf bytes.Buffer
	buf.Grow(int(d.n))
	for _, sec := range d.held {
		buf.WriteString(sec.data)
	}
	in = inspect(buf.Bytes(), chip)
	d.s.mu.Lock()
	if old := d.s.infos[key]; old != nil {
		in = old
	} else {
		d.s.infos[key] = in
	}
	d.s.mu.Unlock()
	return in
}

// marker is the string the image package (and sim/core's stand-in images)
// write into an ESP8266 sketch to say what it is.
var marker = regexp.MustCompile(`(?:sketch|image) project=([^ \x00]+) version=([^ \x00]+)`)

// inspect is what the updater of chip makes of data, and what the image
// tells once it runs. The updaters' checks (image package words):
//   - ESP8266 (ESP8266httpUpdate, Updater): the first byte 0xE9, or 0x1F
//     for a gzip image, which eboot inflates at boot; the header's flash
//     size must fit. An application image of any chip passes.
//   - ESP32 (HTTPUpdate, Update): the first byte 0xE9; at the end the
//     image must verify for this chip (esp_ota_end, then the boot
//     partition is set).
func inspect(data []byte, chip string) *imageInfo {
	in := &imageInfo{sizeKiB: (len(data) + 1023) / 1024}
	esp8266 := chip == "esp8266"
	if len(data) == 0 {
		in.why = tasmotafw.ErrHeader
		return in
	}
	parsed, _ := image.Parse(data)
	if esp8266 {
		if data[0] != 0xE9 && data[0] != 0x1F {
			in.why = tasmotafw.ErrHeader
			return in
		}
		in.ok = true
		body := data
		if data[0] == 0x1F {
			if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
				if b, err := io.ReadAll(io.LimitReader(zr, 4<<20)); err == nil {
					body = b
				}
			}
			in.sizeKiB = (len(body) + 1023) / 1024
		}
		if parsed != nil && parsed.Kind == image.KindApp && !parsed.Header.ChipID.IsESP8266() && parsed.Header.ChipID.Known() {
			in.foreign = true
		}
		if m := marker.FindSubmatch(body); m != nil {
			in.project, in.version = string(m[1]), string(m[2])
		}
		return in
	}
	if data[0] != 0xE9 {
		in.why = tasmotafw.ErrHeader
		return in
	}
	c, _ := image.ChipByName(chip)
	rep := image.Validate(data, image.Policy{Chip: c, ChipSet: true, SlotSize: esp32SlotKiB << 10})
	for _, f := range rep.Errors {
		if f.Code != image.CodeNoAppDesc { // the bootloader needs no app description
			in.why = errActivate
			return in
		}
	}
	in.ok = true
	if parsed != nil && parsed.App != nil {
		in.project, in.version = parsed.App.ProjectName, parsed.App.Version
	}
	return in
}
