// Package s3 is a [store.Store] in an S3-compatible bucket (AWS S3, MinIO,
// versitygw, R2, …), through minio-go. Objects are private: devices fetch
// them through a public URL the user controls (a CDN or a proxy that signs
// its requests to the bucket), because images embed Wi-Fi credentials.
package s3

import (
	"context"
	"errors"

	"github.com/minio/minio-go/v7"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/store"
)

// Config says where the bucket is and how devices reach it.
type Config struct {
	Bucket    string
	Prefix    string      // key prefix below the bucket, "" = the bucket's root
	Endpoint  string      // http(s)://host[:port]; "" = AWS S3 (https://s3.amazonaws.com)
	Region    string      // "" = asked from the endpoint
	AccessKey string      // "" with an empty SecretKey = anonymous (no signature)
	SecretKey auth.Secret // never printed
	// PublicURL is the devices' base URL for the store prefix: an object at
	// <prefix>/<key> is fetched by devices at PublicURL + "/" + key.
	PublicURL string
}

// Store is an S3 bucket as a [store.Store].
type Store struct {
	cfg Config
	c   *minio.Client
}

var _ store.Store = (*Store)(nil)

// ParseURL splits s3://bucket[/prefix] into the bucket and the prefix (no
// leading or trailing "/").
func ParseURL(s string) (bucket, prefix string, err error) {
	return "", "", errors.New("TODO")
}

// Open connects to the bucket and checks that it exists and that the
// credentials work. Its errors are one line naming the endpoint and the
// bucket, never the secret.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	return nil, errors.New("TODO")
}

func (s *Store) PutImage(ctx context.Context, files map[string]string) (map[string]string, error) {
	return nil, errors.New("TODO")
}

func (s *Store) PutFile(ctx context.Context, name string, body []byte) (string, error) {
	return "", errors.New("TODO")
}

func (s *Store) GetFile(ctx context.Context, name string) ([]byte, bool, error) {
	return nil, false, errors.New("TODO")
}

func (s *Store) DeleteFile(ctx context.Context, name string) error { return errors.New("TODO") }

// String is "s3://bucket/prefix".
func (s *Store) String() string { return "s3://" + s.cfg.Bucket + "/" + s.cfg.Prefix }
