// Package store is where a rollout publishes files for devices to fetch,
// besides ots-ota's built-in file server (store/s3: S3-compatible storage).
package store

import "context"

// Store is where a rollout publishes files for devices to fetch (besides ots-ota's built-in file server).
type Store interface {
	// PutImage uploads files (served name → local path; the image and its companions) into ONE folder whose
	// name is content-addressed (hash of all names+contents, ≥96 bits), skipping objects already there with
	// the same size. Returns each name's device URL (PublicURL + "/" + key below the store prefix).
	PutImage(ctx context.Context, files map[string]string) (map[string]string, error)
	// Manifest objects: at a stable name below the store prefix (e.g. "manifest.json", "canary.json"),
	// Cache-Control no-cache, Content-Type application/json. Get: (nil,false,nil) when absent.
	PutFile(ctx context.Context, name string, body []byte) (url string, err error)
	GetFile(ctx context.Context, name string) ([]byte, bool, error)
	DeleteFile(ctx context.Context, name string) error
	String() string // "s3://bucket/prefix" — never a secret
}
