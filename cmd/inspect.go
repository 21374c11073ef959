package cmd

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/fwfile"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/partition"
)

type inspectOptions struct {
	Files []string
	policyFlags
}

// policyFlags are --chip, --max-size and --partitions: what a firmware image
// must match before it may be sent. inspect and push share them.
type policyFlags struct {
	Chip       string
	MaxSize    string
	Partitions string

	policy   image.Policy // resolved by resolve
	slotNote string       // why the slot size is what it is, when worth saying
}

// bind adds the flags to c.
func (p *policyFlags) bind(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&p.Chip, "chip", "", "chip the image must be built for (esp32, esp32s3, esp32c3, ..., esp8266)")
	f.StringVar(&p.MaxSize, "max-size", "", "OTA slot size: 2M, 1536K, 0x200000 or 2097152")
	f.StringVar(&p.Partitions, "partitions", "", "partitions.csv or binary partition table to read the OTA slot size from")
	_ = c.MarkFlagFilename("partitions", "csv", "bin")
	completeChips(c)
}

// maxFileRead bounds how much of a file inspect reads: no ESP app exceeds 16 MiB
// (the largest app partition a 32-bit map allows is far below what we read).
const maxFileRead = 64 << 20

// maxTableRead bounds a --partitions file: a CSV of a few dozen lines, or
// the 3 KiB binary table.
const maxTableRead = 1 << 20

func newInspectCmd(a *app) *cobra.Command {
	o := &inspectOptions{}
	c := &cobra.Command{
		Use:   "inspect FILE...",
		Short: "Tell what a firmware file is and whether it is safe to upload",
		Long: `Inspect parses each file locally and says what it is (application image, ELF,
bootloader, merged image, partition table, ESP8266 image, ...), for which chip, which
project and version, and whether it may be uploaded over the air. "-" reads
standard input.

Exit status: 0 when every file is uploadable, 1 when any has errors, 2 on usage errors,
130 when interrupted.`,
		Example: `  ots-ota inspect .pio/build/esp32-s3-dev/firmware.bin
  ots-ota inspect --chip esp32s3 --partitions partitions.csv firmware.bin
  ots-ota inspect --max-size 2M --json *.bin`,
		Args: argsMin(1, "at least one FILE"),
	}
	c.RunE = run(a, o, runInspect)
	o.bind(c)
	return c
}

// chipNames lists the chips image knows, for completion and hints.
func chipNames() []string {
	var names []string
	for _, c := range image.Chips() {
		names = append(names, c.String())
	}
	return append(names, image.ChipESP8266.String())
}

// completeChips offers the known chip names for a command's --chip flag.
func completeChips(c *cobra.Command) {
	_ = c.RegisterFlagCompletionFunc("chip", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return chipNames(), cobra.ShellCompDirectiveNoFileComp
	})
}

// parseChip reads the --chip value; an unknown name is a usage error listing the known ones.
func parseChip(a *app, name string) (image.Chip, error) {
	c, ok := image.ChipByName(name)
	if !ok {
		return 0, a.flagError("chip", "unknown chip (known: %s)", strings.Join(chipNames(), ", "))
	}
	return c, nil
}

// exclusive resolves two flags that say the same thing differently: the one
// from the higher-ranked place wins (a typed --partitions beats max-size from
// the config file); from the same place, they are a usage error.
func exclusive(a *app, x, y string) (keep string, err error) {
	ox, oy := a.cfg.origins[x], a.cfg.origins[y]
	switch {
	case ox.rank == rankDefault || oy.rank == rankDefault:
		return "", nil
	case ox.rank == oy.rank:
		return "", usageErrorf("--%s and --%s say the same thing: give one (%s, %s)", x, y, ox.where, oy.where)
	case ox.rank > oy.rank:
		a.log.Info("ignoring a value overridden by another flag", "ignored", oy.where, "by", ox.where)
		return x, nil
	default:
		a.log.Info("ignoring a value overridden by another flag", "ignored", ox.where, "by", oy.where)
		return y, nil
	}
}

func (o *inspectOptions) validate(a *app, args []string) error {
	o.Files = args
	if n := slices.Index(args, "-"); n >= 0 && slices.Index(args[n+1:], "-") >= 0 {
		return usageErrorf("standard input (-) can be read only once")
	}
	return o.resolve(a)
}

// resolve checks the flags and turns them into a validation policy.
func (o *policyFlags) resolve(a *app) error {
	if o.Chip != "" {
		c, err := parseChip(a, o.Chip)
		if err != nil {
			return err
		}
		o.policy.Chip, o.policy.ChipSet = c, true
	}
	keep, err := exclusive(a, "max-size", "partitions")
	if err != nil {
		return err
	}
	switch {
	case o.MaxSize != "" && keep != "partitions":
		n, err := partition.ParseSize(o.MaxSize)
		if err != nil {
			return a.flagError("max-size", "not a size (use 2M, 1536K, 0x200000 or 2097152)")
		}
		if n <= 0 {
			return a.flagError("max-size", "the slot size must be more than 0")
		}
		o.policy.SlotSize = n
		a.log.Info("slot size", "bytes", n, "from", a.source("max-size"))
	case o.Partitions != "":
		n, note, err := slotFromPartitions(a, o.Partitions)
		if err != nil {
			return err
		}
		o.policy.SlotSize, o.slotNote = n, note
		a.log.Info("slot size", "bytes", n, "from", "partition table "+o.Partitions+" ("+a.source("partitions")+")")
	default:
		a.log.Info("no slot size: the image is not checked against a slot (give --max-size or --partitions)")
	}
	return nil
}

// slotFromPartitions reads the OTA slot size from a partition table file.
func slotFromPartitions(a *app, path string) (int64, string, error) {
	start := time.Now()
	data, err := readRegular(context.Background(), path, maxTableRead)
	var tl *fwfile.TooLargeError
	var nr *fwfile.NotRegularError
	switch {
	case errors.As(err, &tl):
		return 0, "", a.flagError("partitions", "%s: not a partition table", err)
	case errors.As(err, &nr):
		return 0, "", a.flagError("partitions", "%s: give the partition table file (partitions.csv, or the partitions.bin of a build)", err)
	case err != nil:
		return 0, "", a.flagError("partitions", "%s", err)
	}
	t, err := partition.Parse(data)
	if err != nil {
		return 0, "", a.flagError("partitions", "not a partition table: %s", rootCause(err))
	}
	a.log.Debug("partition table read", "path", path, "bytes", len(data), "took", time.Since(start).Round(time.Microsecond))
	n, err := t.OTASlotSize()
	if err != nil {
		return 0, "", a.flagError("partitions", "%s", err)
	}
	note := ""
	if d := t.OTASlotSizesDiffer(); d != "" {
		note = fmt.Sprintf("the OTA slots differ in size (%s): checked against the smallest, %s", d, humanBytes(n))
	}
	return n, note, nil
}

// readRegular reads a regular file of at most limit bytes (fwfile.Read:
// FIFOs, directories and devices refused up front, the size checked from
// disk, the read stopped when ctx ends). push and info call it too.
func readRegular(ctx context.Context, path string, limit int64) ([]byte, error) {
	return fwfile.Read(ctx, path, limit)
}

// fileKind names what a file that is not a regular file is.
func fileKind(st os.FileInfo) string { return fwfile.Kind(st) }

// inspectResult is the --json shape (after the line's type and schema):
// stable snake_case fields. Every field is present on every object; null
// where it does not apply.
// Keep inspectJSONFields (inspect_test.go) and the README in step.
type inspectResult struct {
	File          string          `json:"file"`
	OK            bool            `json:"ok"`
	Kind          string          `json:"kind"`
	Chip          *string         `json:"chip"`
	Project       *string         `json:"project"`
	Version       *string         `json:"version"`
	IDFVer        *string         `json:"idf_ver"`
	Date          *string         `json:"date"`
	Time          *string         `json:"time"`
	SecureVersion *uint32         `json:"secure_version"`
	ELFSHA256     *string         `json:"elf_sha256"`
	Size          *int64          `json:"size"`
	ImageLen      *int            `json:"image_len"`
	Segments      *int            `json:"segments"`
	Entry         *string         `json:"entry"`
	ChecksumOK    *bool           `json:"checksum_ok"`
	SHA256        *string         `json:"sha256"`
	SHA256OK      *bool           `json:"sha256_ok"`
	Layout        *string         `json:"layout"`
	Signature     *string         `json:"signature"`
	SigBlocks     *int            `json:"signature_blocks"`
	SlotSize      *int64          `json:"slot_size"`
	SlotPercent   *float64        `json:"slot_percent"`
	AppOffset     *int            `json:"app_offset"`
	Errors        []findingResult `json:"errors"`
	Warnings      []findingResult `json:"warnings"`

	// digestCut: the header says a digest is appended, the file ends
	// before it (an error tells that; the digest was not "not appended").
	digestCut bool
}

type findingResult struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint"`
}

// MarshalJSON writes a finding as an error object: hint null when none.
func (f findingResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(newErrorObject(f.Code, f.Message, f.Hint))
}

// inspectLine is one file in --json.
type inspectLine struct {
	lineHead
	inspectResult
}

func findings(fs []image.Finding) []findingResult {
	out := make([]findingResult, 0, len(fs))
	for _, f := range fs {
		out = append(out, findingResult{Code: f.Code, Message: f.Message, Hint: f.Hint})
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// val is *p, or the zero value for nil.
func val[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

func inspectFile(ctx context.Context, a *app, path string, o *inspectOptions) (inspectResult, error) {
	p := o.policy
	r := inspectResult{File: path, Kind: "unreadable", Errors: []findingResult{}, Warnings: []findingResult{}}
	if p.SlotSize > 0 {
		r.SlotSize = ptr(p.SlotSize) // the slot is known whatever the file holds
	}
	// Mapped, not copied: inspect reads the file once, while hashing it.
	data, release, err := fwfile.MapArg(ctx, path, a.io.In, maxFileRead)
	var tl *fwfile.TooLargeError
	var nr *fwfile.NotRegularError
	switch {
	case err != nil && ctx.Err() != nil:
		return r, ctx.Err()
	case errors.As(err, &tl):
		r.Kind = string(image.KindUnknown)
		if tl.Size > 0 {
			r.Size = ptr(tl.Size)
		}
		r.Errors = append(r.Errors, findingResult{Code: "too_large", Message: err.Error() + ": not an ESP32 application image",
			Hint: "upload the application .bin from your build directory"})
		return r, nil
	case errors.As(err, &nr):
		// The path is right, the file is not: the hint says what to give.
		r.Errors = append(r.Errors, findingResult{Code: "unreadable", Message: err.Error() + ": give the firmware file itself", Hint: "or - to read it from stdin"})
		return r, nil
	case err != nil:
		r.Errors = append(r.Errors, findingResult{Code: "unreadable", Message: err.Error(), Hint: "check the path"})
		return r, nil
	}
	defer release()
	var rep *image.Report
	// Validate copies what it keeps (digests, strings), so nothing of data outlives release.
	if err := fwfile.Guard(path, func() { rep = image.Validate(data, p) }); err != nil {
		r.Errors = append(r.Errors, findingResult{Code: "unreadable", Message: err.Error(), Hint: "inspect it again once it is fully written"})
		return r, nil
	}
	r.Size = ptr(int64(len(data)))
	r.Errors, r.Warnings = findings(rep.Errors), findings(rep.Warnings)
	r.OK = rep.OK()
	if o.slotNote != "" {
		r.Warnings = append(r.Warnings, findingResult{Code: "slot_sizes_differ", Message: o.slotNote,
			Hint: "an image that fits the smallest slot fits every slot"})
	}
	if p.SlotSize > 0 {
		r.SlotSize = ptr(p.SlotSize)
		r.SlotPercent = ptr(float64(int(float64(len(data))*1000/float64(p.SlotSize))) / 10)
	}
	img := rep.Image
	if img == nil {
		r.Kind = string(image.KindUnknown)
		return r, nil
	}
	r.Kind = string(img.Kind)
	if img.AppOffset > 0 {
		r.AppOffset = ptr(img.AppOffset)
	}
	if img.Kind == image.KindMerged {
		r.Chip = ptr(img.Header.ChipID.String()) // the bootloader's, which the message names
	}
	if img.Kind == image.KindApp || img.Kind == image.KindBootloader {
		r.Chip = ptr(img.Header.ChipID.String())
		r.Segments = ptr(len(img.Segments))
		r.Entry = ptr(fmt.Sprintf("0x%08X", img.Header.Entry))
		r.ImageLen = ptr(img.Len)
	}
	inspectESP8266(&r, img)
	// Checksum and digest only mean something once parsing reached them (not on a truncated file).
	if (img.Kind == image.KindApp || img.Kind == image.KindBootloader) && img.Len > 0 {
		r.ChecksumOK = ptr(img.ChecksumOK)
		if img.Digest != nil {
			r.SHA256OK = ptr(img.DigestOK)
			r.SHA256 = ptr(hex.EncodeToString(img.Digest))
		}
		r.digestCut = img.Header.HashAppended && img.Digest == nil
		r.Signature = ptr(img.Signature.Scheme)
		r.SigBlocks = ptr(len(img.Signature.Blocks))
	}
	if d := img.App; d != nil {
		r.Project, r.Version, r.IDFVer, r.Date, r.Time = ptr(d.ProjectName), ptr(d.Version), ptr(d.IDFVer), ptr(d.Date), ptr(d.Time)
		r.SecureVersion = ptr(d.SecureVersion)
		if d.ELFSHA256 != ([32]byte{}) {
			r.ELFSHA256 = ptr(hex.EncodeToString(d.ELFSHA256[:]))
		}
	}
	return r, nil
}

// inspectESP8266 fills what an ESP8266 image (or the one a gzip file
// inflates to) tells: its layout, and for a v1 image its segments.
func inspectESP8266(r *inspectResult, img *image.Image) {
	e := img
	if img.Kind == image.KindGzip {
		e = img.Inner
	}
	if e == nil || e.Kind != image.KindESP8266 {
		return
	}
	r.Chip = ptr(image.ChipESP8266.String())
	r.Layout = nullString(string(e.Layout))
	if e.Layout == image.LayoutArduino {
		r.AppOffset = ptr(e.AppOffset)
	}
	if len(e.Segments) == 0 {
		return
	}
	r.Segments = ptr(len(e.Segments))
	r.Entry = ptr(fmt.Sprintf("0x%08X", e.Header.Entry))
	r.ImageLen = ptr(e.Len)
	r.ChecksumOK = ptr(e.ChecksumOK)
	if e.Digest != nil {
		r.SHA256OK = ptr(e.DigestOK)
		r.SHA256 = ptr(hex.EncodeToString(e.Digest))
	}
	r.Signature = ptr(e.Signature.Scheme)
}

func runInspect(ctx context.Context, a *app, o *inspectOptions) error {
	var bad []string // files that are not ok
	st := style{on: a.color()}
	for i, path := range o.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		r, err := inspectFile(ctx, a, path, o)
		if err != nil {
			return err
		}
		a.log.Debug("inspected", "file", path, "kind", r.Kind, "took", time.Since(start).Round(time.Microsecond))
		if !r.OK {
			bad = append(bad, path)
		}
		if a.opts.JSON {
			a.writeLine(inspectLine{head("file"), r})
			continue
		}
		if i > 0 {
			fmt.Fprintln(a.io.Out)
		}
		renderInspect(a.io.Out, r, st)
	}
	if a.opts.JSON {
		s := summaryAs[*countSummary](a)
		s.Count, s.Failed = ptr(len(o.Files)), ptr(len(bad))
	}
	if len(bad) > 0 {
		return silentError{code: ExitFailed, json: ptr(newErrorObject("not_uploadable",
			fmt.Sprintf("%d of %d file(s) not uploadable: %s", len(bad), len(o.Files), firstFew(bad)), "each file's errors say why"))}
	}
	return nil
}

func renderInspect(w io.Writer, r inspectResult, st style) {
	verdict := st.green("ok to upload")
	if !r.OK {
		verdict = st.red("NOT uploadable")
	}
	fmt.Fprintf(w, "%s: %s, %s\n", st.bold(r.File), kindLabel(r.Kind), verdict)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-10s %s\n", k, v)
		}
	}
	row("chip", val(r.Chip))
	row("project", val(r.Project))
	row("version", val(r.Version))
	built := strings.TrimSpace(val(r.Date) + " " + val(r.Time))
	if v := val(r.IDFVer); v != "" {
		built = strings.TrimSpace(built + ", ESP-IDF " + v)
	}
	row("built", built)
	if n := val(r.Size); n > 0 {
		size := fmt.Sprintf("%s (%d bytes)", humanBytes(n), n)
		if r.SlotSize != nil {
			size += fmt.Sprintf(", %.1f %% of a %s slot", val(r.SlotPercent), humanBytes(*r.SlotSize))
		}
		row("size", size)
	}
	if r.ChecksumOK != nil {
		row("checksum", okWord(*r.ChecksumOK, st))
	}
	switch {
	case r.SHA256OK != nil:
		row("sha256", okWord(*r.SHA256OK, st)+" ("+short(val(r.SHA256))+")")
	case r.ChecksumOK != nil && !r.digestCut:
		row("sha256", "not appended")
	}
	if sig := val(r.Signature); sig != "" {
		if n := val(r.SigBlocks); n > 0 {
			sig += fmt.Sprintf(", %d block(s)", n)
		}
		row("signature", sig)
	}
	row("layout", layoutLabel(val(r.Layout)))
	if r.AppOffset != nil {
		row("app at", fmt.Sprintf("0x%X", *r.AppOffset))
	}
	for _, f := range r.Errors {
		fmt.Fprintf(w, "  %s %s\n", st.red("error:"), f.Message)
		if f.Hint != "" {
			fmt.Fprintf(w, "         %s\n", f.Hint)
		}
	}
	for _, f := range r.Warnings {
		fmt.Fprintf(w, "  %s %s\n", st.yellow("warning:"), f.Message)
		if f.Hint != "" {
			fmt.Fprintf(w, "           %s\n", f.Hint)
		}
	}
}

func kindLabel(k string) string {
	switch image.Kind(k) {
	case image.KindApp:
		return "application image"
	case image.KindPartitionTable:
		return "partition table"
	case image.KindMerged:
		return "merged flash image"
	case image.KindELF:
		return "ELF file"
	case image.KindESP8266:
		return "ESP8266 image"
	case image.KindIntelHex:
		return "Intel HEX file"
	case image.KindEncrypted:
		return "pre-encrypted image"
	case image.KindBootloader:
		return "bootloader image"
	case image.KindGzip:
		return "gzip archive"
	case image.KindZip:
		return "zip archive"
	case image.KindUF2:
		return "UF2 file"
	case image.KindLittleFS:
		return "LittleFS image"
	case image.KindEmpty:
		return "empty file"
	case image.KindUnknown:
		return "unrecognised file"
	case "unreadable":
		return "unreadable file"
	}
	return strings.ReplaceAll(k, "_", " ") + " file"
}

// layoutLabel names an ESP8266 image's build for the text view.
func layoutLabel(l string) string {
	switch image.Layout(l) {
	case image.LayoutArduino:
		return "esp8266/Arduino (eboot at 0x0, sketch at 0x1000)"
	case image.LayoutRTOS:
		return "ESP8266_RTOS_SDK application"
	case image.LayoutNONOS:
		return "ESP8266 v1 image (NONOS SDK or esptool)"
	case image.LayoutNONOSOTA:
		return "ESP8266 NONOS SDK OTA image (0xEA)"
	}
	return l
}

func okWord(ok bool, st style) string {
	if ok {
		return st.green("ok")
	}
	return st.red("MISMATCH")
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
