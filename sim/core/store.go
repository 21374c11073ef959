package core

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"weak"

	"github.com/ots-ota/ots-ota/image"
)

// Store holds image bytes shared by devices: identical images (the factory
// image of a fleet, the same firmware pushed to 250 devices) are kept once.
// Entries are weak: an image no device holds any more is collected. A Store
// is safe for concurrent use; the zero value is not usable, call NewStore.
type Store struct {
	mu    sync.Mutex
	blobs map[[32]byte]weak.Pointer[blob]
	built map[buildKey]*blob // factory images by build options (strong: few)
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{blobs: make(map[[32]byte]weak.Pointer[blob]), built: make(map[buildKey]*blob)}
}

// blob is one image, immutable once made.
type blob struct {
	data []byte
	sum  [32]byte
	info imgInfo
}

// imgInfo is what the device knows about an image from its app description.
type imgInfo struct {
	Project, Version, IDFVer, Chip string
	SecureVersion                  uint32
	ELFSHA256                      string
}

func describe(data []byte) imgInfo {
	img, _ := image.Parse(data)
	var in imgInfo
	if img == nil {
		return in
	}
	if img.Kind == image.KindApp {
		in.Chip = img.Header.ChipID.String()
	}
	if a := img.App; a != nil {
		in.Project, in.Version, in.IDFVer = a.ProjectName, a.Version, a.IDFVer
		in.SecureVersion = a.SecureVersion
		in.ELFSHA256 = hex.EncodeToString(a.ELFSHA256[:])
	} else if img.Layout == image.LayoutArduino {
		// An ESP8266 sketch has no app description; the images the image
		// package builds name project and version in a readable string.
		if m := sketchTag.FindSubmatch(data[:min(len(data), 16<<10)]); m != nil {
			in.Project, in.Version, in.Chip = string(m[1]), string(m[2]), "esp8266"
		}
	}
	return in
}

// sketchTag is the string image.Build writes into an esp8266/Arduino
// sketch it makes.
var sketchTag = regexp.MustCompile(`ots-ota sim esp8266 sketch project=([^ \x00]+) version=([^ \x00]+)`)

// intern returns the shared blob for data, adding it when new. The store
// keeps data (the caller must not modify it afterwards).
func (s *Store) intern(data []byte) *blob { return s.internWith(data, nil) }

// internWith is intern with the metadata given for a new blob (images the
// image package cannot describe, such as the simulated ESP8266 image);
// nil = parse it.
func (s *Store) internWith(data []byte, info *imgInfo) *blob {
	sum := sha256.Sum256(data)
	if b := s.lookup(sum); b != nil {
		return b
	}
	var in imgInfo
	if info != nil {
		in = *info
	} else {
		in = describe(data) // outside the lock: parsing 2 MB takes a while
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if wp, ok := s.blobs[sum]; ok {
		if b := wp.Value(); b != nil {
			return b
		}
	}
	b := &blob{data: data, sum: sum, info: in}
	s.blobs[sum] = weak.Make(b)
	return b
}

func (s *Store) lookup(sum [32]byte) *blob {
	s.mu.Lock()
	defer s.mu.Unlock()
	if wp, ok := s.blobs[sum]; ok {
		return wp.Value()
	}
	return nil
}

// match returns a live blob whose first bytes equal p (nil if none).
func (s *Store) match(p []byte) *blob {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sum, wp := range s.blobs {
		b := wp.Value()
		if b == nil {
			delete(s.blobs, sum) // collected: prune
			continue
		}
		if len(b.data) >= len(p) && bytes.Equal(b.data[:len(p)], p) {
			return b
		}
	}
	return nil
}

type buildKey struct {
	chip                  image.Chip
	project, version, idf string
	size                  int
	seed                  int64
}

// build returns the image for the options, building it once per store.
func (s *Store) build(k buildKey) (*blob, error) {
	s.mu.Lock()
	b, ok := s.built[k]
	s.mu.Unlock()
	if ok {
		return b, nil
	}
	data, err := image.Build(image.BuildOptions{Chip: k.chip, Project: k.project, Version: k.version, IDFVer: k.idf, Size: k.size, Seed: k.seed})
	if err != nil {
		return nil, fmt.Errorf("build factory image: %w", err)
	}
	b = s.intern(data)
	s.mu.Lock()
	s.built[k] = b
	s.mu.Unlock()
	return b, nil
}

// errSlotFull is esp_partition_write past the end of the slot.
var errSlotFull = errors.New("write past the end of the slot")

// slotWriter collects an upload without copying what the store already
// has: while the bytes match a stored image it only advances an offset,
// and copies into a private buffer from the first difference on. So 250
// devices receiving the same firmware hold it once.
type slotWriter struct {
	store *Store
	limit int64
	n     int64
	cand  *blob  // stored image matched so far (nil once diverged)
	buf   []byte // private copy after divergence
}

func newSlotWriter(s *Store, limit int64) *slotWriter { return &slotWriter{store: s, limit: limit} }

func (w *slotWriter) write(p []byte) error {
	if w.n+int64(len(p)) > w.limit {
		return errSlotFull
	}
	if len(p) == 0 {
		return nil
	}
	if w.n == 0 {
		w.cand = w.store.match(p)
	}
	if w.cand != nil {
		end := w.n + int64(len(p))
		if end <= int64(len(w.cand.data)) && bytes.Equal(w.cand.data[w.n:end], p) {
			w.n = end
			return nil
		}
		w.buf = make([]byte, w.n, max(2*(w.n+int64(len(p))), 64<<10))
		copy(w.buf, w.cand.data[:w.n])
		w.cand = nil
	}
	w.buf = append(w.buf, p...)
	w.n += int64(len(p))
	return nil
}

// first returns the first byte written and whether there is one.
func (w *slotWriter) first() (byte, bool) {
	switch {
	case w.n == 0:
		return 0, false
	case w.cand != nil:
		return w.cand.data[0], true
	default:
		return w.buf[0], true
	}
}

// bytes returns what was written (shared or private; read-only).
func (w *slotWriter) bytes() []byte {
	if w.cand != nil {
		return w.cand.data[:w.n]
	}
	return w.buf[:w.n]
}

// finish interns the written image and returns its blob.
func (w *slotWriter) finish() *blob {
	if w.cand != nil && w.n == int64(len(w.cand.data)) {
		return w.cand
	}
	data := w.bytes()
	if w.cand == nil && cap(w.buf) > len(w.buf)+len(w.buf)/4 {
		data = bytes.Clone(data) // drop the growth slack before keeping it
	}
	return w.store.intern(data)
}
