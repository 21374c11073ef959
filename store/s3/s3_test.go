package s3_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/internal/tests3"
	"github.com/ots-ota/ots-ota/store/s3"
)

const prefix = "fleet/ota"

func TestMain(m *testing.M) {
	// minio-go waits up to a second between its retries; the tests of an
	// endpoint that went away need not wait for the pacing a real network
	// gets.
	minio.DefaultRetryUnit, minio.DefaultRetryCap = 5*time.Millisecond, 20*time.Millisecond
	os.Exit(m.Run())
}

func config(srv *tests3.Server, public string) s3.Config {
	return s3.Config{
		Bucket:    srv.Bucket(),
		Prefix:    prefix,
		Endpoint:  srv.Endpoint(),
		AccessKey: srv.AccessKey(),
		SecretKey: srv.SecretKey(),
		PublicURL: public,
	}
}

func open(t *testing.T, srv *tests3.Server, public string) *s3.Store {
	t.Helper()
	st, err := s3.Open(t.Context(), config(srv, public))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return st
}

// image writes a Tasmota-like image and its companions: name → content.
func image(t *testing.T) (files map[string]string, content map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files, content = map[string]string{}, map[string][]byte{}
	for name, size := range map[string]int{"tasmota32.bin": 300_000, "tasmota32.bin.gz": 120_000, "tasmota32-minimal.bin.gz": 90_000} {
		b := make([]byte, size)
		_, _ = rand.Read(b)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		files[name], content[name] = p, b
	}
	return files, content
}

// keyOf is the object key behind a device URL under public.
func keyOf(t *testing.T, public, u string) string {
	t.Helper()
	rel, ok := strings.CutPrefix(u, public+"/")
	if !ok {
		t.Fatalf("URL %q is not under the public URL %q", u, public)
	}
	return prefix + "/" + rel
}

func get(t *testing.T, c *minio.Client, bucket, key string, opts minio.GetObjectOptions) []byte {
	t.Helper()
	o, err := c.GetObject(t.Context(), bucket, key, opts)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

func TestPutImageAndManifests(t *testing.T) {
	t.Parallel()
	srv := tests3.Start(t)
	const public = "https://cdn.example.com/ota"
	st := open(t, srv, public)
	if got, want := st.String(), "s3://"+srv.Bucket()+"/"+prefix; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	files, content := image(t)
	urls, err := st.PutImage(t.Context(), files)
	if err != nil {
		t.Fatalf("PutImage: %v", err)
	}
	if len(urls) != len(files) {
		t.Fatalf("PutImage gave %d URLs for %d files: %v", len(urls), len(files), urls)
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(public) + `/(tasmota32-[a-z2-7]{20})/([a-z0-9.-]+)$`)
	folders := map[string]bool{}
	c := srv.Client(t)
	for name, u := range urls {
		m := re.FindStringSubmatch(u)
		if m == nil || m[2] != name {
			t.Errorf("URL of %s: %q, want %s/tasmota32-<20 base32 characters>/%s", name, u, public, name)
			continue
		}
		folders[m[1]] = true
		if len(u) > fileserve.MaxURLLen {
			t.Errorf("URL of %s is %d characters, devices take %d", name, len(u), fileserve.MaxURLLen)
		}
		key := keyOf(t, public, u)
		if b := get(t, c, srv.Bucket(), key, minio.GetObjectOptions{}); !bytes.Equal(b, content[name]) {
			t.Errorf("%s: %d bytes stored, not the file's %d", key, len(b), len(content[name]))
		}
		info, err := c.StatObject(t.Context(), srv.Bucket(), key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatalf("stat %s: %v", key, err)
		}
		if cc := info.Metadata.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("%s: Cache-Control %q, want immutable", key, cc)
		}
		if info.ContentType != "application/octet-stream" {
			t.Errorf("%s: Content-Type %q", key, info.ContentType)
		}
	}
	if len(folders) != 1 {
		t.Errorf("the image and its companions are in %d folders (%v), want one", len(folders), folders)
	}
	// The same files again: the same URLs.
	again, err := st.PutImage(t.Context(), files)
	if err != nil || fmt.Sprint(again) != fmt.Sprint(urls) {
		t.Errorf("PutImage again: %v, %v; want %v", again, err, urls)
	}

	// Manifests.
	if b, ok, err := st.GetFile(t.Context(), "manifest.json"); b != nil || ok || err != nil {
		t.Errorf("GetFile of an absent manifest: %q, %v, %v; want nil, false, nil", b, ok, err)
	}
	body := []byte(`{"name":"x","version":"1.2.3","builds":[]}`)
	u, err := st.PutFile(t.Context(), "manifest.json", body)
	if err != nil || u != public+"/manifest.json" {
		t.Fatalf("PutFile: %q, %v; want %s/manifest.json", u, err, public)
	}
	info, err := c.StatObject(t.Context(), srv.Bucket(), prefix+"/manifest.json", minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("stat the manifest: %v", err)
	}
	if cc := info.Metadata.Get("Cache-Control"); cc != "no-cache" || info.ContentType != "application/json" {
		t.Errorf("manifest: Cache-Control %q, Content-Type %q; want no-cache, application/json", cc, info.ContentType)
	}
	if b, ok, err := st.GetFile(t.Context(), "manifest.json"); !bytes.Equal(b, body) || !ok || err != nil {
		t.Errorf("GetFile: %q, %v, %v; want %q", b, ok, err, body)
	}
	body2 := []byte(`{"name":"x","version":"1.2.4","builds":[]}`)
	if _, err := st.PutFile(t.Context(), "manifest.json", body2); err != nil {
		t.Fatal(err)
	}
	if b, _, _ := st.GetFile(t.Context(), "manifest.json"); !bytes.Equal(b, body2) {
		t.Errorf("GetFile after a rewrite: %q, want %q", b, body2)
	}
	if err := st.DeleteFile(t.Context(), "manifest.json"); err != nil {
		t.Fatalf("DeleteFile: %v", err)
	}
	if b, ok, err := st.GetFile(t.Context(), "manifest.json"); b != nil || ok || err != nil {
		t.Errorf("GetFile after DeleteFile: %q, %v, %v; want nil, false, nil", b, ok, err)
	}
	if err := st.DeleteFile(t.Context(), "manifest.json"); err != nil {
		t.Errorf("DeleteFile of an absent manifest: %v", err)
	}
	for _, bad := range []string{"", "../x.json", "a/b.json", ".hidden", "a b.json"} {
		if _, err := st.PutFile(t.Context(), bad, body); err == nil {
			t.Errorf("PutFile(%q) took the name", bad)
		}
	}
}

// An object already in the image's folder with the right size is not
// uploaded again (the folder is named by the contents); one of another size
// (a cut upload) is replaced.
func TestPutImageSkipsExisting(t *testing.T) {
	t.Parallel()
	srv := tests3.Start(t)
	const public = "http://cdn.test"
	st := open(t, srv, public)
	files, content := image(t)
	urls, err := st.PutImage(t.Context(), files)
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client(t)
	key := keyOf(t, public, urls["tasmota32.bin"])
	marked := bytes.Repeat([]byte{'m'}, len(content["tasmota32.bin"]))
	if _, err := c.PutObject(t.Context(), srv.Bucket(), key, bytes.NewReader(marked), int64(len(marked)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutImage(t.Context(), files); err != nil {
		t.Fatal(err)
	}
	if b := get(t, c, srv.Bucket(), key, minio.GetObjectOptions{}); !bytes.Equal(b, marked) {
		t.Errorf("an object of the same size was uploaded again")
	}
	if _, err := c.PutObject(t.Context(), srv.Bucket(), key, bytes.NewReader(marked[:1000]), 1000, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutImage(t.Context(), files); err != nil {
		t.Fatal(err)
	}
	if b := get(t, c, srv.Bucket(), key, minio.GetObjectOptions{}); !bytes.Equal(b, content["tasmota32.bin"]) {
		t.Errorf("a cut object (%d bytes) was not replaced by the image", len(b))
	}
}

// Objects are private: no request sets an ACL, and the server refuses a
// request without a signature, for an image, a manifest and the bucket's
// listing.
func TestObjectsArePrivate(t *testing.T) {
	t.Parallel()
	srv := tests3.Start(t)
	const public = "http://cdn.test"
	// A recording proxy between the store and the server; the Host header
	// stays the one signed.
	target, _ := url.Parse(srv.Endpoint())
	var mu sync.Mutex
	var puts int
	var acls []string
	rec := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
		mu.Lock()
		defer mu.Unlock()
		if r.In.Method == http.MethodPut {
			puts++
		}
		for h := range r.In.Header {
			if h = strings.ToLower(h); h == "x-amz-acl" || strings.HasPrefix(h, "x-amz-grant-") {
				acls = append(acls, r.In.Method+" "+r.In.URL.Path+" "+h)
			}
		}
	}})
	t.Cleanup(rec.Close)
	cfg := config(srv, public)
	cfg.Endpoint = rec.URL
	st, err := s3.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := image(t)
	urls, err := st.PutImage(t.Context(), files)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutFile(t.Context(), "manifest.json", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if puts < 4 || len(acls) > 0 {
		t.Errorf("%d PUT requests seen (want 4: 3 files, a manifest); ACL headers sent: %q", puts, acls)
	}
	mu.Unlock()
	for _, key := range []string{keyOf(t, public, urls["tasmota32.bin"]), prefix + "/manifest.json", ""} {
		u := srv.Endpoint() + "/" + srv.Bucket() + "/" + key
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("anonymous GET %s: %s (%d bytes), want 403", u, resp.Status, len(b))
		}
	}
}

func TestRangeThroughCDN(t *testing.T) {
	t.Parallel()
	srv := tests3.Start(t)
	front := srv.Front(t, prefix) // the user's CDN: signs requests to the private bucket
	st := open(t, srv, front)
	files, content := image(t)
	urls, err := st.PutImage(t.Context(), files)
	if err != nil {
		t.Fatal(err)
	}
	img := content["tasmota32.bin"]
	n := len(img)
	for _, tc := range []struct {
		rng        string
		start, end int // the bytes expected, end exclusive
	}{
		{"bytes=1000-1999", 1000, 2000},
		{"bytes=0-0", 0, 1},
		{fmt.Sprintf("bytes=%d-", n-4096), n - 4096, n},
		{"bytes=-100", n - 100, n},
		{fmt.Sprintf("bytes=100000-%d", n+5000), 100000, n},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, urls["tasmota32.bin"], nil)
		req.Header.Set("Range", tc.rng)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end-1, n)
		if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != want || !bytes.Equal(b, img[tc.start:tc.end]) {
			t.Errorf("Range %s: %s, Content-Range %q, %d bytes (right bytes: %v); want 206, %q, %d bytes",
				tc.rng, resp.Status, resp.Header.Get("Content-Range"), len(b), bytes.Equal(b, img[tc.start:tc.end]), want, tc.end-tc.start)
		}
	}
	// A whole GET: 200, the bytes, the image's Cache-Control.
	resp, err := http.Get(urls["tasmota32.bin"])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, img) || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Errorf("GET: %s, %d bytes, Cache-Control %q; want 200, %d bytes, immutable", resp.Status, len(b), resp.Header.Get("Cache-Control"), n)
	}
	// The manifest through the same front: no-cache.
	mu, err := st.PutFile(t.Context(), "manifest.json", []byte(`{"version":"1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(mu)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != `{"version":"1"}` || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("manifest GET: %s, %q, Cache-Control %q; want 200, the body, no-cache", resp.Status, b, resp.Header.Get("Cache-Control"))
	}

	// A ranged GetObject, signed by the client itself.
	var opts minio.GetObjectOptions
	if err := opts.SetRange(5, 9); err != nil {
		t.Fatal(err)
	}
	if b := get(t, srv.Client(t), srv.Bucket(), keyOf(t, front, urls["tasmota32.bin"]), opts); !bytes.Equal(b, img[5:10]) {
		t.Errorf("GetObject bytes 5-9: %d bytes (%x), want %x", len(b), b, img[5:10])
	}
}

// A URL devices cannot take is refused before anything is uploaded.
func TestURLTooLong(t *testing.T) {
	t.Parallel()
	srv := tests3.Start(t)
	public := "https://cdn.example.com/" + strings.Repeat("p", 40)
	st := open(t, srv, public)
	files, _ := image(t)
	_, err := st.PutImage(t.Context(), files)
	if err == nil || !strings.Contains(err.Error(), "devices take at most 100") {
		t.Fatalf("PutImage under a long public URL: %v, want an error naming the limit", err)
	}
	for o := range srv.Client(t).ListObjects(t.Context(), srv.Bucket(), minio.ListObjectsOptions{Recursive: true}) {
		t.Errorf("an object was uploaded: %q (%v)", o.Key, o.Err)
	}
}

// Every error is one line naming the store and the endpoint, and no error
// holds the secret key (the right one or a wrong one given).
func TestErrorsNameTheStoreNeverTheSecret(t *testing.T) {
	t.Parallel()
	srv := tests3.Start(t)
	const public = "http://cdn.test"
	wrong := "wrong-" + srv.SecretKey().Reveal()[:10] + "-secret"
	secrets := []string{srv.SecretKey().Reveal(), wrong}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	var errs []error
	check := func(what string, err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		errs = append(errs, err)
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q, want it to say %q", what, err, w)
			}
		}
	}
	ctx := t.Context()
	cfg := config(srv, public)
	bad := cfg
	bad.SecretKey = auth.NewSecret(wrong)
	_, err = s3.Open(ctx, bad)
	check("wrong secret", err, srv.Endpoint(), "s3://"+srv.Bucket(), "secret key")
	bad = cfg
	bad.AccessKey = "nobody"
	_, err = s3.Open(ctx, bad)
	check("unknown access key", err, srv.Endpoint(), "access key")
	bad = cfg
	bad.Bucket = "no-such-bucket"
	_, err = s3.Open(ctx, bad)
	check("no bucket", err, srv.Endpoint(), "s3://no-such-bucket", "does not exist")
	bad = cfg
	bad.Endpoint = closed
	_, err = s3.Open(ctx, bad)
	check("nothing listening", err, closed, "cannot reach")
	bad = cfg
	bad.PublicURL = ""
	_, err = s3.Open(ctx, bad)
	check("no public URL", err, "public URL")
	bad = cfg
	bad.PublicURL = "ftp://x"
	_, err = s3.Open(ctx, bad)
	check("bad public URL", err, "public URL")
	bad = cfg
	bad.Endpoint = "http://127.0.0.1:1/path"
	_, err = s3.Open(ctx, bad)
	check("endpoint with a path", err, "endpoint")
	bad = cfg
	bad.SecretKey = auth.Secret{}
	_, err = s3.Open(ctx, bad)
	check("no secret", err, "secret key")

	st := open(t, srv, public)
	_, err = st.PutImage(ctx, map[string]string{"fw.bin": filepath.Join(t.TempDir(), "absent.bin")})
	check("missing file", err, "fw.bin", "s3://"+srv.Bucket())
	_, err = st.PutImage(ctx, nil)
	check("no files", err)
	files, _ := image(t)
	srv.Stop()
	_, err = st.PutImage(ctx, files)
	check("PutImage, server gone", err, srv.Endpoint(), "cannot reach")
	_, err = st.PutFile(ctx, "manifest.json", []byte("{}"))
	check("PutFile, server gone", err, srv.Endpoint(), "manifest.json")
	_, _, err = st.GetFile(ctx, "manifest.json")
	check("GetFile, server gone", err, srv.Endpoint())
	err = st.DeleteFile(ctx, "manifest.json")
	check("DeleteFile, server gone", err, srv.Endpoint())

	shown := []string{st.String(), fmt.Sprintf("%v %+v %#v", st, st, st), fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg)}
	for _, e := range errs {
		if strings.Contains(e.Error(), "\n") {
			t.Errorf("error on more than one line: %q", e)
		}
		shown = append(shown, e.Error())
	}
	for _, s := range shown {
		for _, sec := range secrets {
			if strings.Contains(s, sec) {
				t.Errorf("a secret is shown: %q", s)
			}
		}
	}
	t.Logf("errors:\n%s", strings.Join(shown[3:], "\n"))
}
