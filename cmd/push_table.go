package cmd

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-runewidth"

	"github.com/ots-ota/ots-ota/upload"
)

// The summary table's columns.
const (
	colDevice = iota
	colAddress
	colProtocol
	colFromTo
	colOutcome
	colTries
	colTime
	colRate
	colMessage
)

// minMessage is the narrowest message column worth keeping columns out for.
const minMessage = 20

// writePushTable writes the summary table and its totals. On a terminal
// (width > 0) it fits the width: the columns that matter least are left
// out while the message would get fewer than minMessage columns (first the
// address when it only repeats the device, then KB/s, time, tries,
// protocol), and the message is cut with "…". --json keeps every word.
func writePushTable(w io.Writer, width int, a *app, results []upload.Result, totals string) {
	st := style{on: a.color()}
	cells := [][]string{{"DEVICE", "ADDRESS", "PROTOCOL", "FROM → TO", "OUTCOME", "TRIES", "TIME", "KB/S", "MESSAGE"}}
	repeats := true
	for _, res := range results {
		rate := "-"
		if res.Rate > 0 {
			rate = fmt.Sprintf("%.0f", res.Rate/1000)
		}
		took := "-"
		if res.Duration > 0 {
			took = res.Duration.Round(100 * time.Millisecond).String()
		}
		proto := string(res.Protocol)
		if proto == "" {
			proto = "-"
		}
		msg := a.said(res.Message)
		for _, wmsg := range res.Warnings {
			msg += " [warning: " + a.said(wmsg) + "]"
		}
		// fromTo compares the versions as told; only what is shown is
		// redacted, and made one line.
		row := []string{res.Device, res.Addr, proto, fromTo(res), res.OutcomeText(), fmt.Sprint(res.Tries), took, rate, msg}
		for i := range row {
			row[i] = oneLine(a.secrets.Redact(row[i]))
		}
		repeats = repeats && (row[colAddress] == row[colDevice] || strings.HasPrefix(row[colAddress], row[colDevice]+":"))
		cells = append(cells, row)
	}
	drop := []int{colRate, colTime, colTries, colProtocol, colAddress}
	if repeats {
		drop = []int{colAddress, colRate, colTime, colTries, colProtocol}
	}
	paint := func(row, col int, s string) string {
		if row == 0 || col != colOutcome {
			return s
		}
		return outcomeStyled(st, results[row-1], s)
	}
	limit := width - 1 // never the last column: some terminals wrap there
	if width <= 0 {
		limit = 0
	}
	for _, l := range fitTable(cells, limit, drop, paint) {
		fmt.Fprintln(w, l)
	}
	for _, l := range wrapList(totals, limit) {
		fmt.Fprintln(w, l)
	}
}

// fitTable lays cells out in columns two spaces apart, the last one
// unpadded. With limit > 0 no line is wider: the columns in drop are left
// out, in that order, while the last column would get fewer than
// minMessage columns; then the last column is cut with "…". paint colours
// a cell once it is cut.
func fitTable(cells [][]string, limit int, drop []int, paint func(row, col int, s string) string) []string {
	ncol := len(cells[0])
	widths := make([]int, ncol)
	for _, row := range cells {
		for c, s := range row {
			widths[c] = max(widths[c], runewidth.StringWidth(s))
		}
	}
	keep := make([]bool, ncol)
	for c := range keep {
		keep[c] = true
	}
	last := ncol - 1
	fixed := func() int { // the columns before the last, with their gaps
		n := 0
		for c := 0; c < last; c++ {
			if keep[c] {
				n += widths[c] + 2
			}
		}
		return n
	}
	if limit > 0 {
		for _, c := range drop {
			if fixed()+min(widths[last], minMessage) <= limit {
				break
			}
			keep[c] = false
		}
	}
	var lines []string
	for r, row := range cells {
		var b strings.Builder
		for c, s := range row {
			if !keep[c] {
				continue
			}
			if c == last {
				if limit > 0 {
					s = fit(s, max(limit-fixed(), 0))
				}
				b.WriteString(paint(r, c, s))
				continue
			}
			b.WriteString(paint(r, c, s) + strings.Repeat(" ", widths[c]-runewidth.StringWidth(s)+2))
		}
		line := strings.TrimRight(b.String(), " ")
		if limit > 0 && fixed() > limit {
			// Even the columns that stay are too wide: cut the line, colour lost.
			plain := make([]string, 0, ncol)
			for c, s := range row {
				if keep[c] {
					plain = append(plain, fitPad(s, widths[c]))
				}
			}
			line = fit(strings.TrimRight(strings.Join(plain, "  "), " "), limit)
		}
		lines = append(lines, line)
	}
	return lines
}

// wrapList breaks a comma-separated list into lines of at most limit
// columns (0: no limit), between its items.
func wrapList(s string, limit int) []string {
	if limit <= 0 || runewidth.StringWidth(s) <= limit {
		return []string{s}
	}
	var lines []string
	cur := ""
	for _, item := range strings.SplitAfter(s, ", ") {
		if cur != "" && runewidth.StringWidth(cur+strings.TrimRight(item, " ")) > limit {
			lines = append(lines, strings.TrimRight(cur, " "))
			cur = "  "
		}
		cur += item
	}
	lines = append(lines, strings.TrimRight(cur, " "))
	for i, l := range lines {
		lines[i] = fit(l, limit)
	}
	return lines
}

// outputWidth is the width of the terminal w is, or 0 when w is none.
func outputWidth(w io.Writer, tty bool) int {
	if f, ok := w.(*os.File); ok && tty {
		cols, _ := terminalSize(f)
		return cols
	}
	return 0
}
