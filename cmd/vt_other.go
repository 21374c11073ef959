//go:build !windows

package cmd

import "os"

// enableVT: terminals here handle escape sequences as they are.
func enableVT(*os.File) bool { return true }
