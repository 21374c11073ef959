//go:build !windows

package cmd

import "os"

// enableVT: terminals here handle escape sequences as they are; there is
// nothing to restore.
func enableVT(*os.File) (restore func(), ok bool) { return func() {}, true }
