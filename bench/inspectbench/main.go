//go:build linux

// Command inspectbench measures what bench/inspect-bench.sh prints: the
// median wall time and peak RSS of whole ots-ota processes, and the median
// time Go's SHA-256 takes over a file already in memory (the floor for
// inspect, which must hash the file once).
//
//	inspectbench -n 21 -sha FILE
//	inspectbench -n 21 -- ots-ota inspect FILE
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 21, "runs; the median is printed")
	shaFile := flag.String("sha", "", "time SHA-256 over this file instead of running a command")
	flag.Parse()
	if *n < 1 || (*shaFile == "") == (flag.NArg() == 0) {
		fmt.Fprintln(os.Stderr, "usage: inspectbench [-n N] (-sha FILE | -- COMMAND ARGS...)")
		os.Exit(2)
	}
	if *shaFile != "" {
		data, err := os.ReadFile(*shaFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sha256.Sum256(data) // warm up
		walls := make([]time.Duration, *n)
		for i := range walls {
			start := time.Now()
			sha256.Sum256(data)
			walls[i] = time.Since(start)
		}
		fmt.Printf("%.3f\n", ms(median(walls)))
		return
	}
	walls := make([]time.Duration, *n)
	rss := make([]int64, *n) // peak RSS, KiB
	for i := range walls {
		cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
		start := time.Now()
		err := cmd.Run()
		walls[i] = time.Since(start)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%v: %v\n", flag.Args(), err)
			os.Exit(1)
		}
		rss[i] = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	}
	// wall in ms, peak RSS in KiB
	fmt.Printf("%.3f %d\n", ms(median(walls)), median(rss))
}

func median[T int64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
