package esphomepull

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"hash"
	"sync"
)

// images is what a fleet shares of the images its nodes download: one
// copy of each URL's bytes and their MD5, recorded by the first node that
// downloads it whole. Every node still makes its own GET (the server's
// load is real) and checks its own bytes: against the copy while they
// match it (a compare, not an MD5 per node), by hashing them once they do
// not. A node keeps no image of its own.
type images struct {
	mu        sync.Mutex
	byURL     map[string]*image
	recording map[string]bool
}

type image struct {
	data []byte
	md5  string
}

func newImages() *images {
	return &images{byURL: map[string]*image{}, recording: map[string]bool{}}
}

// maxRecord bounds an image the store keeps (a flash's size).
const maxRecord = 16 << 20

// imageReader is one download's view of the store.
type imageReader struct {
	s   *images
	url string
	img *image // the copy compared against; nil once the bytes differ
	rec *bytes.Buffer
	h   hash.Hash // nil while the bytes match img
	n   int64
}

// reader starts a download of url whose length the server said (-1: not
// said).
func (s *images) reader(url string, size int64) *imageReader {
	r := &imageReader{s: s, url: url}
	s.mu.Lock()
	defer s.mu.Unlock()
	r.img = s.byURL[url]
	if r.img != nil && size >= 0 && int64(len(r.img.data)) != size {
		// Another image at the URL now: record it instead.
		r.img = nil
		delete(s.byURL, url)
		delete(s.recording, url)
	}
	if r.img == nil {
		r.h = md5.New()
		if size > 0 && size <= maxRecord && !s.recording[url] {
			s.recording[url] = true
			r.rec = bytes.NewBuffer(make([]byte, 0, size))
		}
	}
	return r
}

func (r *imageReader) add(b []byte) {
	if r.img != nil {
		end := r.n + int64(len(b))
		if end <= int64(len(r.img.data)) && bytes.Equal(r.img.data[r.n:end], b) {
			r.n = end
			return
		}
		// Not the copy: hash what matched so far, then go on hashing.
		r.h = md5.New()
		r.h.Write(r.img.data[:r.n])
		r.img = nil
	}
	r.h.Write(b)
	if r.rec != nil {
		r.rec.Write(b)
	}
	r.n += int64(len(b))
}

// sum is the MD5 of the bytes added (the download complete).
func (r *imageReader) sum() string {
	if r.img != nil {
		if r.n == int64(len(r.img.data)) {
			return r.img.md5
		}
		r.h = md5.New()
		r.h.Write(r.img.data[:r.n])
		r.img = nil
	}
	s := hex.EncodeToString(r.h.Sum(nil))
	if r.rec != nil && int64(r.rec.Len()) == r.n && r.rec.Cap() == r.rec.Len() {
		r.s.mu.Lock()
		r.s.byURL[r.url] = &image{data: r.rec.Bytes(), md5: s}
		r.s.mu.Unlock()
		r.rec = nil
	}
	return s
}

// close ends the download; a recording not completed is dropped, so the
// next download of the URL records.
func (r *imageReader) close() {
	if r.rec != nil {
		r.s.mu.Lock()
		delete(r.s.recording, r.url)
		r.s.mu.Unlock()
		r.rec = nil
	}
}

// bufPool holds the nodes' read buffers (one flash sector each).
var bufPool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

func getBuf() []byte  { return *(bufPool.Get().(*[]byte)) }
func putBuf(b []byte) { bufPool.Put(&b) }
