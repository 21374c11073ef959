// Package s3 is a [store.Store] in an S3-compatible bucket (AWS S3, MinIO,
// versitygw, R2, …), through minio-go. Objects are private (no ACL is set,
// so they get the bucket's default: the owner only): devices fetch them
// through a public URL the user controls (a CDN or a proxy that signs its
// requests to the bucket), because images embed Wi-Fi credentials.
package s3

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/internal/oneline"
	"github.com/ots-ota/ots-ota/store"
)

// Config says where the bucket is and how devices reach it.
type Config struct {
	Bucket    string
	Prefix    string      // key prefix below the bucket ("a/b"), "" = the bucket's root
	Endpoint  string      // http(s)://host[:port]; "" = AWS S3 (https://s3.amazonaws.com)
	Region    string      // "" = asked from the endpoint
	AccessKey string      // required
	SecretKey auth.Secret // required; never printed
	// PublicURL is the devices' base URL for the store prefix (required):
	// the object <prefix>/<key> is fetched by devices at PublicURL + "/" +
	// key.
	PublicURL string
}

// Cache-Control of the objects: an image's folder is named by its
// contents, so its objects never change; a manifest is rewritten in place,
// so a CDN must ask the bucket again every time.
const (
	imageCacheControl    = "public, max-age=31536000, immutable"
	manifestCacheControl = "no-cache"
)

// hashChars is the folder's hash part: 20 base32 characters = 100 bits of
// SHA-256 (≥ 96 asked).
const hashChars = 20

// maxStem keeps the folder short, so the image URL fits devices' 100
// characters with a plain public URL.
const maxStem = 24

// maxManifest bounds what GetFile reads: a manifest is a few hundred bytes.
const maxManifest = 1 << 20

// maxRetries bounds minio-go's retries (its default, 10, makes an
// unreachable endpoint take ten seconds to report).
const maxRetries = 4

// Store is an S3 bucket as a [store.Store]. Its methods may be called from
// several goroutines at once.
type Store struct {
	cfg    Config
	public string // PublicURL without a trailing "/"
	c      *minio.Client
}

var _ store.Store = (*Store)(nil)

// ParseURL splits s3://bucket[/prefix] into the bucket and the prefix (no
// leading or trailing "/"). The bucket follows S3's naming rules; the
// prefix's segments are letters, digits, '.', '_' and '-', none "." or
// "..", so that device URLs need no escaping.
func ParseURL(s string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return "", "", fmt.Errorf("store %q: expected s3://bucket or s3://bucket/prefix", oneline.Clean(s, 80))
	}
	if strings.ContainsAny(rest, "?#") {
		return "", "", fmt.Errorf("store %q: a query or fragment has no meaning here: use s3://bucket/prefix", oneline.Clean(s, 80))
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if err := checkBucket(bucket); err != nil {
		return "", "", fmt.Errorf("store %q: %v", oneline.Clean(s, 80), err)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if err := checkPrefix(prefix); err != nil {
		return "", "", fmt.Errorf("store %q: %v", oneline.Clean(s, 80), err)
	}
	return bucket, prefix, nil
}

// checkBucket applies S3's bucket naming rules: 3 to 63 characters,
// lowercase letters, digits, '.' and '-', starting and ending with a
// letter or digit, no "..", not an IPv4 address.
func checkBucket(b string) error {
	switch {
	case b == "":
		return errors.New("no bucket named")
	case len(b) < 3 || len(b) > 63:
		return fmt.Errorf("bucket %q: a bucket name is 3 to 63 characters", oneline.Clean(b, 70))
	case strings.Contains(b, ".."):
		return fmt.Errorf("bucket %q: a bucket name has no \"..\"", b)
	case net.ParseIP(b) != nil:
		return fmt.Errorf("bucket %q: a bucket name is not an IP address", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		alnum := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !alnum && c != '.' && c != '-' {
			return fmt.Errorf("bucket %q: a bucket name is lowercase letters, digits, '.' and '-'", oneline.Clean(b, 70))
		}
		if !alnum && (i == 0 || i == len(b)-1) {
			return fmt.Errorf("bucket %q: a bucket name starts and ends with a letter or digit", b)
		}
	}
	return nil
}

func checkPrefix(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > 200 {
		return errors.New("the prefix is longer than 200 characters")
	}
	for _, seg := range strings.Split(p, "/") {
		if !validName(seg) {
			return fmt.Errorf("prefix %q: each part is letters, digits, '.', '_' or '-' (not starting with '.'), parts separated by one '/'", oneline.Clean(p, 80))
		}
	}
	return nil
}

// validName keeps object names to characters that need no escaping in a
// URL (the built-in file server's rule), no "." or "..".
func validName(n string) bool {
	if n == "" || len(n) > 64 || n[0] == '.' {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Open connects to the bucket and checks that it exists and that the
// credentials work. Its errors are one line naming the endpoint and the
// bucket, never the secret.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	where := "s3://" + cfg.Bucket
	if cfg.Prefix != "" {
		where += "/" + cfg.Prefix
	}
	if err := checkBucket(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("store %s: %v", oneline.Clean(where, 80), err)
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if err := checkPrefix(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("store %s: %v", oneline.Clean(where, 80), err)
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = "https://s3.amazonaws.com"
	}
	ep, err := url.Parse(cfg.Endpoint)
	if err != nil || (ep.Scheme != "http" && ep.Scheme != "https") || ep.Host == "" || ep.User != nil || strings.Trim(ep.Path, "/") != "" || ep.RawQuery != "" || ep.Fragment != "" {
		return nil, fmt.Errorf("store %s: the endpoint %q is not http(s)://host[:port]", where, oneline.Clean(cfg.Endpoint, 80))
	}
	cfg.Endpoint = ep.Scheme + "://" + ep.Host
	pub, err := url.Parse(cfg.PublicURL)
	if cfg.PublicURL == "" {
		return nil, fmt.Errorf("store %s: a public URL is required (the base devices fetch the store's objects from: a CDN or proxy in front of the bucket)", where)
	}
	if err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "" || pub.User != nil || pub.RawQuery != "" || pub.Fragment != "" {
		return nil, fmt.Errorf("store %s: the public URL %q is not an http:// or https:// base URL (scheme, host and an optional path)", where, oneline.Clean(cfg.PublicURL, 80))
	}
	if cfg.AccessKey == "" || cfg.SecretKey.IsZero() {
		return nil, fmt.Errorf("store %s at %s: an access key and a secret key are required", where, cfg.Endpoint)
	}
	c, err := minio.New(ep.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey.Reveal(), ""),
		Secure:       ep.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath, // no DNS name per bucket needed
		MaxRetries:   maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("store %s at %s: %s", where, cfg.Endpoint, scrub(oneline.Clean(err.Error(), 200), cfg.SecretKey))
	}
	s := &Store{cfg: cfg, public: strings.TrimRight(cfg.PublicURL, "/"), c: c}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, s.fail("", err)
	}
	if !ok {
		return nil, s.fail("", errors.New("the bucket does not exist"))
	}
	return s, nil
}

// String is "s3://bucket/prefix" ("s3://bucket" without a prefix).
func (s *Store) String() string {
	if s.cfg.Prefix == "" {
		return "s3://" + s.cfg.Bucket
	}
	return "s3://" + s.cfg.Bucket + "/" + s.cfg.Prefix
}

// key is the object key of rel (a path below the store prefix).
func (s *Store) key(rel string) string {
	if s.cfg.Prefix == "" {
		return rel
	}
	return s.cfg.Prefix + "/" + rel
}

// fail makes err one line naming the store and the endpoint, never the
// secret: S3's error codes become what a user can act on.
func (s *Store) fail(what string, err error) error {
	msg := describe(err)
	if what != "" {
		msg = what + ": " + msg
	}
	return errors.New(scrub(fmt.Sprintf("store %s at %s: %s", s.String(), s.cfg.Endpoint, msg), s.cfg.SecretKey))
}

func describe(err error) string {
	var ue *url.Error
	switch r := minio.ToErrorResponse(err); {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case r.Code == "NoSuchBucket":
		return "the bucket does not exist"
	case r.Code == "InvalidAccessKeyId" || r.Code == "XAdminUserNotFound": // the latter: versitygw
		return "the endpoint does not know the access key"
	case r.Code == "SignatureDoesNotMatch":
		return "the secret key does not match the access key"
	case r.Code == "AccessDenied":
		return "access denied (check the access key, the secret key and the bucket's permissions)"
	case r.Code != "":
		msg := r.Code
		if r.Message != "" {
			msg += ": " + r.Message
		}
		if r.StatusCode != 0 {
			msg += " (HTTP " + strconv.Itoa(r.StatusCode) + ")"
		}
		return oneline.Clean(msg, 200)
	case errors.As(err, &ue):
		// Drop the method and URL: the endpoint is named already.
		return "cannot reach it (" + oneline.Clean(ue.Err.Error(), 160) + ")"
	}
	return oneline.Clean(err.Error(), 200)
}

// scrub replaces the secret wherever a message from below might hold it.
func scrub(msg string, secret auth.Secret) string {
	if v := secret.Reveal(); v != "" {
		msg = strings.ReplaceAll(msg, v, auth.Redacted)
	}
	return msg
}

// imageFolder is the folder PutImage puts these files in (name → content
// read from open): "<stem>-<20 lowercase base32 characters>", the hash
// part SHA-256 over every name and content (names sorted, each framed by
// its length so no two sets of files hash alike), the stem the shortest
// name up to its first '.'.
func imageFolder(names []string, open func(name string) (io.Reader, error)) (string, map[string]int64, error) {
	sort.Strings(names)
	h := sha256.New()
	sizes := make(map[string]int64, len(names))
	for _, n := range names {
		r, err := open(n)
		if err != nil {
			return "", nil, err
		}
		fmt.Fprintf(h, "%d:%s\n", len(n), n)
		// The content's length follows it, so a name never runs into
		// the next file's content.
		size, err := io.Copy(h, r)
		if err != nil {
			return "", nil, err
		}
		fmt.Fprintf(h, "\n%d\n", size)
		sizes[n] = size
	}
	sum := h.Sum(nil)
	enc := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum))
	return stem(names) + "-" + enc[:hashChars], sizes, nil
}

func stem(names []string) string {
	best := ""
	for _, n := range names {
		st, _, _ := strings.Cut(n, ".")
		if best == "" || len(st) < len(best) || len(st) == len(best) && st < best {
			best = st
		}
	}
	if best == "" {
		best = "image"
	}
	if len(best) > maxStem {
		best = strings.TrimRight(best[:maxStem], "-_")
	}
	return best
}

// PutImage uploads files (served name → local path) into one
// content-addressed folder, skipping objects already there with the same
// size, and returns each name's device URL. A URL longer than devices take
// (fileserve.MaxURLLen) is an error before anything is uploaded.
func (s *Store) PutImage(ctx context.Context, files map[string]string) (map[string]string, error) {
	if len(files) == 0 {
		return nil, s.fail("", errors.New("no image to upload"))
	}
	names := make([]string, 0, len(files))
	opened := make(map[string]*os.File, len(files))
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	for n, p := range files {
		if !validName(n) {
			return nil, s.fail("", fmt.Errorf("cannot upload %q: a name is letters, digits, '.', '_' or '-' (not starting with '.'), at most 64", oneline.Clean(n, 70)))
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, s.fail("", fmt.Errorf("cannot upload %s: %v", n, pathError(err)))
		}
		opened[n] = f
		names = append(names, n)
	}
	folder, sizes, err := imageFolder(names, func(n string) (io.Reader, error) { return opened[n], nil })
	if err != nil {
		return nil, s.fail("", fmt.Errorf("cannot read the image: %v", pathError(err)))
	}
	urls := make(map[string]string, len(names))
	for _, n := range names {
		u := s.public + "/" + folder + "/" + n
		if len(u) > fileserve.MaxURLLen {
			return nil, s.fail("", fmt.Errorf("the URL for %s would be %d characters, devices take at most %d: use a shorter public URL, store prefix or file name", n, len(u), fileserve.MaxURLLen))
		}
		urls[n] = u
	}
	for _, n := range names {
		key := s.key(folder + "/" + n)
		st, err := s.c.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{})
		if err == nil && st.Size == sizes[n] {
			continue // content-addressed: the same name and size is the same upload
		}
		if err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
			return nil, s.fail("cannot look for "+key, err)
		}
		// A section reader can be read again when minio-go retries, and
		// uploads exactly the bytes hashed even if the file grew since.
		body := io.NewSectionReader(opened[n], 0, sizes[n])
		_, err = s.c.PutObject(ctx, s.cfg.Bucket, key, body, sizes[n], minio.PutObjectOptions{
			ContentType:  "application/octet-stream",
			CacheControl: imageCacheControl,
		})
		if err != nil {
			return nil, s.fail("cannot upload "+key, err)
		}
	}
	return urls, nil
}

func pathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %v", pe.Path, pe.Err)
	}
	return err
}

// PutFile writes a manifest at name below the store prefix and returns its
// device URL.
func (s *Store) PutFile(ctx context.Context, name string, body []byte) (string, error) {
	if !validName(name) {
		return "", s.fail("", fmt.Errorf("cannot write %q: a name is letters, digits, '.', '_' or '-' (not starting with '.'), at most 64", oneline.Clean(name, 70)))
	}
	_, err := s.c.PutObject(ctx, s.cfg.Bucket, s.key(name), strings.NewReader(string(body)), int64(len(body)), minio.PutObjectOptions{
		ContentType:  "application/json",
		CacheControl: manifestCacheControl,
	})
	if err != nil {
		return "", s.fail("cannot write "+s.key(name), err)
	}
	return s.public + "/" + name, nil
}

// GetFile reads the manifest at name: (nil, false, nil) when absent.
func (s *Store) GetFile(ctx context.Context, name string) ([]byte, bool, error) {
	if !validName(name) {
		return nil, false, s.fail("", fmt.Errorf("cannot read %q: a name is letters, digits, '.', '_' or '-' (not starting with '.'), at most 64", oneline.Clean(name, 70)))
	}
	o, err := s.c.GetObject(ctx, s.cfg.Bucket, s.key(name), minio.GetObjectOptions{})
	if err == nil {
		defer o.Close()
		var b []byte
		b, err = io.ReadAll(io.LimitReader(o, maxManifest+1))
		if err == nil && len(b) > maxManifest {
			return nil, false, s.fail("", fmt.Errorf("%s is larger than %d bytes: not a manifest", s.key(name), maxManifest))
		}
		if err == nil {
			return b, true, nil
		}
	}
	if minio.ToErrorResponse(err).Code == "NoSuchKey" {
		return nil, false, nil
	}
	return nil, false, s.fail("cannot read "+s.key(name), err)
}

// DeleteFile removes the manifest at name; an absent one is no error.
func (s *Store) DeleteFile(ctx context.Context, name string) error {
	if !validName(name) {
		return s.fail("", fmt.Errorf("cannot delete %q: a name is letters, digits, '.', '_' or '-' (not starting with '.'), at most 64", oneline.Clean(name, 70)))
	}
	err := s.c.RemoveObject(ctx, s.cfg.Bucket, s.key(name), minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
		return s.fail("cannot delete "+s.key(name), err)
	}
	return nil
}
