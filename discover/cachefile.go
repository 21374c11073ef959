package discover

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The cache file: what the last discover found, for shell completion of
// targets and `push --all --cached`. It holds names and addresses, no secrets.

type cacheFile struct {
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	Devices []Device  `json:"devices"`
}

// CachePath is the cache file's location in the user's cache directory.
func CachePath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find the cache directory: %w", err)
	}
	return filepath.Join(dir, "ots-ota", "devices.json"), nil
}

// SaveCache replaces the cache file with devices.
func SaveCache(devices []Device) error {
	p, err := CachePath()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(cacheFile{Version: 1, Saved: time.Now().UTC(), Devices: devices}, "", "  ")
	if err != nil {
		return fmt.Errorf("save device cache: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("save device cache: %w", err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save device cache: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save device cache: %w", err)
	}
	return nil
}

// LoadCache reads the cache file; no file gives no devices and no error.
func LoadCache() ([]Device, time.Time, error) {
	p, err := CachePath()
	if err != nil {
		return nil, time.Time{}, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read device cache: %w", err)
	}
	var c cacheFile
	if err := json.Unmarshal(b, &c); err != nil || c.Version != 1 {
		return nil, time.Time{}, fmt.Errorf("device cache %s is unreadable; run ots-ota discover again", p)
	}
	return c.Devices, c.Saved, nil
}
