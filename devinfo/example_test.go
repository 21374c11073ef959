package devinfo_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ots-ota/ots-ota/devinfo"
)

// Query tells what a device runs, each fact with its source. An
// unreachable device is a result, not an error.
func ExampleQuery() {
	f, err := devinfo.Query(context.Background(), devinfo.Target{Host: "192.0.2.40", Port: 3232}, devinfo.Options{Timeout: time.Second})
	if err != nil {
		fmt.Println(err) // only for an unusable target
		return
	}
	if f.Version.Known() {
		fmt.Printf("%s runs %s (from %s), slot %s, state %s\n", f.Target, f.Version.Value, f.Version.Source, f.Running.Value, f.State.Value)
	} else {
		fmt.Println(f.VersionNote)
	}
}

// After an upload, GetOTAStatus polls the extension endpoint: the running
// slot, its state and the uptime (a drop proves a reboot).
func ExampleGetOTAStatus() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := devinfo.GetOTAStatus(ctx, "192.0.2.40:3232", devinfo.Options{})
	switch {
	case err == nil:
		fmt.Println(st.Version, st.Running, st.State, st.UptimeS)
	case errors.Is(err, devinfo.ErrNotServed):
		fmt.Println("no /ota/status on this firmware: fall back to /api/status or TXT")
	default:
		fmt.Println("not back yet:", err)
	}
}
