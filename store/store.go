// Package store is where a rollout publishes the files devices fetch when
// they are not fetched from ots-ota's built-in file server: an image and its
// companions in a content-addressed folder, and announcement files
// (manifests) at stable names.
package store

import "context"

// Store is where a rollout publishes files for devices to fetch (besides
// ots-ota's built-in file server).
type Store interface {
	// PutImage uploads files (served name → local path; the image and its
	// companions) into ONE folder whose name is content-addressed (hash of
	// all names+contents, ≥96 bits), skipping objects already there with the
	// same size. Returns each name's device URL (PublicURL + "/" + key below
	// the store prefix).
	PutImage(ctx context.Context, files map[string]string) (map[string]string, error)
	// PutFile writes a manifest object at a stable name below the store
	// prefix (e.g. "manifest.json", "canary.json"), Cache-Control no-cache,
	// Content-Type application/json, and returns its device URL.
	PutFile(ctx context.Context, name string, body []byte) (url string, err error)
	// GetFile reads a manifest object: (nil, false, nil) when absent.
	GetFile(ctx context.Context, name string) ([]byte, bool, error)
	// DeleteFile removes a manifest object; an absent one is no error.
	DeleteFile(ctx context.Context, name string) error
	// String names the store as "s3://bucket/prefix", never with a secret.
	String() string
}
