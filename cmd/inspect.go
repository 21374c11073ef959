package cmd

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/partition"
)

type inspectOptions struct {
	Files      []string
	Chip       string
	MaxSize    string
	Partitions string
}

// maxFileRead bounds how much of a file inspect reads: no ESP app exceeds 16 MiB
// (the largest app partition a 32-bit map allows is far below what we read).
const maxFileRead = 64 << 20

func newInspectCmd(a *app) *cobra.Command {
	o := &inspectOptions{}
	c := &cobra.Command{
		Use:   "inspect FILE...",
		Short: "Tell what a firmware file is and whether it is safe to upload",
		Long: `Inspect parses each file locally and says what it is (application image, ELF,
bootloader, merged image, partition table, ESP8266 image, ...), for which chip, which
project and version, and whether it may be uploaded over the air.

Exit status: 0 when every file is uploadable, 1 when any has errors, 2 on usage errors.`,
		Example: `  ots-ota inspect .pio/build/esp32-s3-dev/firmware.bin
  ots-ota inspect --chip esp32s3 --partitions partitions.csv firmware.bin
  ots-ota inspect --max-size 2M --json *.bin`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Files = args
			return runInspect(a, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Chip, "chip", "", "chip the image must be built for (esp32, esp32s3, esp32c3, ...)")
	f.StringVar(&o.MaxSize, "max-size", "", "OTA slot size: 2M, 1536K, 0x200000 or 2097152")
	f.StringVar(&o.Partitions, "partitions", "", "partitions.csv or binary partition table to read the OTA slot size from")
	c.MarkFlagsMutuallyExclusive("max-size", "partitions")
	_ = c.MarkFlagFilename("partitions", "csv", "bin")
	completeChips(c)
	return c
}

// chipNames lists the chips image knows, for completion and hints.
func chipNames() []string {
	var names []string
	for _, c := range image.Chips() {
		names = append(names, c.String())
	}
	return names
}

// completeChips offers the known chip names for a command's --chip flag.
func completeChips(c *cobra.Command) {
	_ = c.RegisterFlagCompletionFunc("chip", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return chipNames(), cobra.ShellCompDirectiveNoFileComp
	})
}

// parseChip reads a --chip value; an unknown name is a usage error listing the known ones.
func parseChip(name string) (image.Chip, error) {
	c, ok := image.ChipByName(name)
	if !ok {
		return 0, usageErrorf("unknown chip %q (known: %s)", name, strings.Join(chipNames(), ", "))
	}
	return c, nil
}

// policyFromFlags turns --chip, --max-size and --partitions into a validation policy.
func policyFromFlags(chip, maxSize, partitions string) (image.Policy, error) {
	var p image.Policy
	if chip != "" {
		c, err := parseChip(chip)
		if err != nil {
			return p, err
		}
		p.Chip, p.ChipSet = c, true
	}
	switch {
	case maxSize != "":
		n, err := partition.ParseSize(maxSize)
		if err != nil {
			return p, usageErrorf("--max-size: %v", err)
		}
		p.SlotSize = n
	case partitions != "":
		data, err := os.ReadFile(partitions)
		if err != nil {
			return p, fmt.Errorf("read partition table: %w", err)
		}
		t, err := partition.Parse(data)
		if err != nil {
			return p, fmt.Errorf("partition table %s: %w", partitions, err)
		}
		n, err := t.OTASlotSize()
		if err != nil {
			return p, fmt.Errorf("partition table %s: %w", partitions, err)
		}
		p.SlotSize = n
	}
	return p, nil
}

// readFirmware reads at most maxFileRead bytes; a larger file is reported, not loaded.
func readFirmware(path string) ([]byte, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, false, fmt.Errorf("%s is a directory", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileRead+1))
	if err != nil {
		return nil, false, err
	}
	if len(data) > maxFileRead {
		return nil, true, nil
	}
	return data, false, nil
}

// inspectResult is the --json shape: stable snake_case fields, additive only.
type inspectResult struct {
	File          string          `json:"file"`
	OK            bool            `json:"ok"`
	Kind          string          `json:"kind"`
	Chip          string          `json:"chip,omitempty"`
	Project       string          `json:"project,omitempty"`
	Version       string          `json:"version,omitempty"`
	IDFVer        string          `json:"idf_ver,omitempty"`
	Date          string          `json:"date,omitempty"`
	Time          string          `json:"time,omitempty"`
	SecureVersion *uint32         `json:"secure_version,omitempty"`
	ELFSHA256     string          `json:"elf_sha256,omitempty"`
	Size          int             `json:"size"`
	ImageLen      int             `json:"image_len,omitempty"`
	Segments      int             `json:"segments,omitempty"`
	Entry         string          `json:"entry,omitempty"`
	ChecksumOK    *bool           `json:"checksum_ok,omitempty"`
	SHA256        string          `json:"sha256,omitempty"`
	SHA256OK      *bool           `json:"sha256_ok"`
	Signature     string          `json:"signature,omitempty"`
	SigBlocks     int             `json:"signature_blocks,omitempty"`
	SlotSize      int64           `json:"slot_size,omitempty"`
	SlotPercent   float64         `json:"slot_percent,omitempty"`
	AppOffset     int             `json:"app_offset,omitempty"`
	Errors        []findingResult `json:"errors"`
	Warnings      []findingResult `json:"warnings"`
}

type findingResult struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

func findings(fs []image.Finding) []findingResult {
	out := make([]findingResult, 0, len(fs))
	for _, f := range fs {
		out = append(out, findingResult{Code: f.Code, Message: f.Message, Hint: f.Hint})
	}
	return out
}

func inspectFile(path string, p image.Policy) inspectResult {
	r := inspectResult{File: path, Errors: []findingResult{}, Warnings: []findingResult{}}
	data, tooBig, err := readFirmware(path)
	switch {
	case err != nil:
		r.Kind = "unreadable"
		r.Errors = append(r.Errors, findingResult{Code: "unreadable", Message: err.Error(), Hint: "check the path"})
		return r
	case tooBig:
		r.Kind = string(image.KindUnknown)
		r.Errors = append(r.Errors, findingResult{Code: "too_large", Message: fmt.Sprintf("file is larger than %s: not an ESP32 application image", humanBytes(maxFileRead)),
			Hint: "upload the application .bin from your build directory"})
		return r
	}
	rep := image.Validate(data, p)
	r.Size = len(data)
	r.Errors, r.Warnings = findings(rep.Errors), findings(rep.Warnings)
	r.OK = rep.OK()
	img := rep.Image
	if img == nil {
		r.Kind = string(image.KindUnknown)
		return r
	}
	r.Kind = string(img.Kind)
	r.AppOffset = img.AppOffset
	if img.Kind == image.KindApp || img.Kind == image.KindBootloader {
		r.Chip = img.Header.ChipID.String()
		r.Segments = len(img.Segments)
		r.Entry = fmt.Sprintf("0x%08X", img.Header.Entry)
		r.ImageLen = img.Len
	}
	// Checksum and digest only mean something once parsing reached them (not on a truncated file).
	if (img.Kind == image.KindApp || img.Kind == image.KindBootloader) && img.Len > 0 {
		ck := img.ChecksumOK
		r.ChecksumOK = &ck
		if img.Digest != nil {
			ok := img.DigestOK
			r.SHA256OK = &ok
			r.SHA256 = hex.EncodeToString(img.Digest)
		}
		r.Signature = img.Signature.Scheme
		r.SigBlocks = len(img.Signature.Blocks)
	}
	if d := img.App; d != nil {
		r.Project, r.Version, r.IDFVer, r.Date, r.Time = d.ProjectName, d.Version, d.IDFVer, d.Date, d.Time
		sv := d.SecureVersion
		r.SecureVersion = &sv
		if d.ELFSHA256 != ([32]byte{}) {
			r.ELFSHA256 = hex.EncodeToString(d.ELFSHA256[:])
		}
	}
	if p.SlotSize > 0 && r.Size > 0 {
		r.SlotSize = p.SlotSize
		r.SlotPercent = float64(int(float64(r.Size)*1000/float64(p.SlotSize))) / 10
	}
	return r
}

func runInspect(a *app, o *inspectOptions) error {
	p, err := policyFromFlags(o.Chip, o.MaxSize, o.Partitions)
	if err != nil {
		return err
	}
	failed := false
	st := style{on: a.color()}
	for i, path := range o.Files {
		r := inspectFile(path, p)
		failed = failed || !r.OK
		if a.opts.JSON {
			if err := writeJSON(a.io.Out, r); err != nil {
				return err
			}
			continue
		}
		if i > 0 {
			fmt.Fprintln(a.io.Out)
		}
		renderInspect(a.io.Out, r, st)
	}
	if failed {
		return silentError{ExitFailed}
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
	row("chip", r.Chip)
	row("project", r.Project)
	row("version", r.Version)
	built := strings.TrimSpace(r.Date + " " + r.Time)
	if r.IDFVer != "" {
		built = strings.TrimSpace(built + ", ESP-IDF " + r.IDFVer)
	}
	row("built", built)
	if r.Size > 0 {
		size := fmt.Sprintf("%s (%d bytes)", humanBytes(int64(r.Size)), r.Size)
		if r.SlotSize > 0 {
			size += fmt.Sprintf(", %.1f %% of a %s slot", r.SlotPercent, humanBytes(r.SlotSize))
		}
		row("size", size)
	}
	if r.ChecksumOK != nil {
		row("checksum", okWord(*r.ChecksumOK, st))
	}
	switch {
	case r.SHA256OK != nil:
		row("sha256", okWord(*r.SHA256OK, st)+" ("+short(r.SHA256)+")")
	case r.ChecksumOK != nil:
		row("sha256", "not appended")
	}
	if r.Signature != "" {
		sig := r.Signature
		if r.SigBlocks > 0 {
			sig += fmt.Sprintf(", %d block(s)", r.SigBlocks)
		}
		row("signature", sig)
	}
	if r.AppOffset > 0 {
		row("app at", fmt.Sprintf("0x%X", r.AppOffset))
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
	case image.KindUnknown:
		return "unrecognised file"
	}
	return strings.ReplaceAll(k, "-", " ")
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
