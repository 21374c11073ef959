package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxCSVLen bounds what ParseCSV reads; real tables are a few hundred bytes.
const maxCSVLen = 1 << 20

// Options are the build settings gen_esp32part.py takes on its command line.
// The zero value is a valid configuration for chips whose ROM loads the
// bootloader from 0x0 (ESP32-S3, C3, C6, H2…) with the table at 0x8000.
type Options struct {
	// TableOffset is CONFIG_PARTITION_TABLE_OFFSET; 0 means 0x8000.
	TableOffset uint32
	// BootloaderOffset is where the primary bootloader lives (0x1000 on
	// ESP32 and ESP32-S2, 0x0 on most others, 0x2000 on C5/P4). It is only
	// used by "bootloader" rows: the primary one is placed here, and every
	// bootloader row is TableOffset − BootloaderOffset bytes long.
	BootloaderOffset uint32
	// RecoveryBootloaderOffset places a "bootloader, recovery" row. 0 means
	// not configured: then the row's own Offset column is used (the build
	// would demand --recovery-bootloader-offset instead).
	RecoveryBootloaderOffset uint32
	// SecureBootV1 requires app sizes to be 64 KB multiples, not 4 KB.
	SecureBootV1 bool
}

// DefaultOptions are what ParseCSV uses: the table at 0x8000 and the
// bootloader at 0x1000 (ESP32). The bootloader offset only matters for
// tables that list bootloader rows.
func DefaultOptions() Options {
	return Options{TableOffset: DefaultTableOffset, BootloaderOffset: 0x1000}
}

func (o Options) tableOffset() uint32 {
	if o.TableOffset == 0 {
		return DefaultTableOffset
	}
	return o.TableOffset
}

// LineError is a CSV error tied to a line (1-based, counting every line).
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

func lineErr(line int, format string, args ...any) error {
	return &LineError{Line: line, Err: fmt.Errorf(format, args...)}
}

// ParseCSV reads an ESP-IDF partitions.csv with DefaultOptions.
//
// The syntax is gen_esp32part.py's: columns Name, Type, SubType, Offset,
// Size, Flags; '#' comment lines and blank lines ignored; whitespace around
// fields ignored; missing trailing columns allowed (columns after Flags are
// ignored, as gen_esp32part.py does); a UTF-8, UTF-16 or UTF-32 BOM honoured.
// Type and SubType are keywords (case-insensitive) or numbers; numbers are
// decimal, 0x…, 0o… or 0b…, optionally with a K or M suffix (×1024,
// ×1048576). An empty Offset is placed after the previous partition (the
// first one after the table's sector), aligned to 64 KB for apps and 4 KB
// otherwise. A Size of "-X" means "up to address X". Flags are
// colon-separated "encrypted" and "readonly" (case-insensitive here).
// Names longer than 16 bytes are cut to 16, as the build does.
//
// Bootloader and partition_table rows (ESP-IDF v5.4+) follow the build: the
// Size column is ignored (the table is 0x1000 bytes, a bootloader
// TableOffset − BootloaderOffset); the primary rows' Offset column is
// ignored too (they sit at Options.BootloaderOffset and Options.TableOffset);
// "N/A" may be written in those columns. $VAR environment references are
// rejected (this package does not read the environment).
//
// After parsing, the table is checked with Validate, as the ESP-IDF build
// does. Every error names the line it is about.
func ParseCSV(r io.Reader) (Table, error) {
	return ParseCSVWith(r, DefaultOptions())
}

// csvRow is a parsed line before offsets are resolved.
type csvRow struct {
	line       int
	name       string // as written; e.Label may be cut to 16 bytes
	e          Entry
	offsetSet  bool  // offset column had a value (or was fixed by Options)
	size       int64 // negative: "up to address -size"
	fixedPlace bool  // primary bootloader/partition table: not laid out in sequence
}

// ParseCSVWith is ParseCSV with explicit build options.
func ParseCSVWith(r io.Reader, opts Options) (Table, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxCSVLen+1))
	if err != nil {
		return nil, fmt.Errorf("read partition CSV: %w", err)
	}
	if len(raw) > maxCSVLen {
		return nil, fmt.Errorf("partition CSV is larger than %d bytes", maxCSVLen)
	}
	text, err := decodeText(raw)
	if err != nil {
		return nil, err
	}
	tableOff := opts.tableOffset()
	if opts.BootloaderOffset >= tableOff {
		return nil, fmt.Errorf("bootloader offset 0x%x must be below the partition table offset 0x%x", opts.BootloaderOffset, tableOff)
	}
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	var rows []csvRow
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(rows) == MaxEntries {
			return nil, lineErr(i+1, "more than %d partitions; the binary table holds at most %d", MaxEntries, MaxEntries)
		}
		row, err := parseRow(line, i+1, opts)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, errors.New("no partitions: the CSV has only comments or blank lines")
	}

	// Resolve empty offsets and negative sizes in file order, as
	// gen_esp32part.py does: each explicit offset must not go backwards.
	lastEnd := uint64(tableOff) + TableSectorSize
	t := make(Table, len(rows))
	lines := make([]int, len(rows))
	names := make([]string, len(rows))
	for i := range rows {
		row := &rows[i]
		lines[i], names[i] = row.line, row.name
		if !row.fixedPlace {
			if row.offsetSet && uint64(row.e.Offset) < lastEnd {
				if i == 0 || allFixed(rows[:i]) {
					return nil, lineErr(row.line, "offset 0x%x overlaps the partition table sector (0x%x–0x%x); use 0x%x or higher",
						row.e.Offset, tableOff, lastEnd-1, lastEnd)
				}
				return nil, lineErr(row.line, "offset 0x%x overlaps the previous partition, which ends at 0x%x", row.e.Offset, lastEnd)
			}
			if !row.offsetSet {
				align := uint64(offsetAlignment(row.e.Type))
				off := (lastEnd + align - 1) / align * align
				if off > math.MaxUint32 {
					return nil, lineErr(row.line, "no room for this partition: the previous one ends at 0x%x", lastEnd)
				}
				row.e.Offset = uint32(off)
			}
		}
		if row.size < 0 {
			end := -row.size
			if end < int64(row.e.Offset) {
				return nil, lineErr(row.line, "size -0x%x means \"up to 0x%x\", but the partition starts at 0x%x", end, end, row.e.Offset)
			}
			row.size = end - int64(row.e.Offset)
		}
		if row.size > math.MaxUint32 {
			return nil, lineErr(row.line, "size 0x%x does not fit in 32 bits", row.size)
		}
		row.e.Size = uint32(row.size)
		if row.e.End() > 1<<32 {
			return nil, lineErr(row.line, "partition ends at 0x%x, beyond the 4 GB address space", row.e.End())
		}
		if !row.fixedPlace {
			lastEnd = row.e.End()
		}
		t[i] = row.e
	}
	if err := validate(t, lines, names, opts); err != nil {
		return nil, err
	}
	return t, nil
}

func allFixed(rows []csvRow) bool {
	for _, r := range rows {
		if !r.fixedPlace {
			return false
		}
	}
	return true
}

// offsetAlignment is gen_esp32part.py's offset alignment for a type.
func offsetAlignment(typ uint8) uint32 {
	if typ == TypeApp {
		return AppAlignment
	}
	return SectorAlignment
}

// decodeText honours a BOM (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE) and checks
// that the result is valid UTF-8.
func decodeText(b []byte) (string, error) {
	switch {
	case bytes.HasPrefix(b, []byte{0xEF, 0xBB, 0xBF}):
		b = b[3:]
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE, 0, 0}):
		return decodeUTF32(b[4:], binary.LittleEndian)
	case bytes.HasPrefix(b, []byte{0, 0, 0xFE, 0xFF}):
		return decodeUTF32(b[4:], binary.BigEndian)
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		return decodeUTF16(b[2:], binary.LittleEndian)
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		return decodeUTF16(b[2:], binary.BigEndian)
	}
	if !utf8.Valid(b) {
		line := 1 + bytes.Count(b[:firstInvalidUTF8(b)], []byte{'\n'})
		return "", lineErr(line, "not valid UTF-8 text (is this a binary file?)")
	}
	return string(b), nil
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

func decodeUTF16(b []byte, order binary.ByteOrder) (string, error) {
	if len(b)%2 != 0 {
		return "", errors.New("UTF-16 text (by its BOM) has an odd number of bytes")
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = order.Uint16(b[2*i:])
	}
	// utf16.Decode would silently replace unpaired surrogates; refuse instead.
	for i := 0; i < len(u); i++ {
		switch c := u[i]; {
		case c >= 0xD800 && c < 0xDC00:
			if i+1 >= len(u) || u[i+1] < 0xDC00 || u[i+1] > 0xDFFF {
				return "", errors.New("invalid UTF-16 text (unpaired surrogate)")
			}
			i++
		case c >= 0xDC00 && c <= 0xDFFF:
			return "", errors.New("invalid UTF-16 text (unpaired surrogate)")
		}
	}
	return string(utf16.Decode(u)), nil
}

func decodeUTF32(b []byte, order binary.ByteOrder) (string, error) {
	if len(b)%4 != 0 {
		return "", errors.New("UTF-32 text (by its BOM) has a length that is not a multiple of 4")
	}
	var sb strings.Builder
	for i := 0; i < len(b); i += 4 {
		r := order.Uint32(b[i:])
		if r > utf8.MaxRune || (r >= 0xD800 && r <= 0xDFFF) {
			return "", fmt.Errorf("invalid UTF-32 code point 0x%x", r)
		}
		sb.WriteRune(rune(r))
	}
	return sb.String(), nil
}

var knownFlags = map[string]uint32{"encrypted": FlagEncrypted, "readonly": FlagReadOnly}

// parseRow parses one non-comment line.
func parseRow(line string, lineNo int, opts Options) (csvRow, error) {
	if err := checkEnvVar(line); err != nil {
		return csvRow{}, lineErr(lineNo, "%v", err)
	}
	fields := strings.Split(line, ",")
	for len(fields) < 6 {
		fields = append(fields, "")
	}
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	row := csvRow{line: lineNo}
	e := &row.e
	e.Label = fields[0]
	row.name = e.Label
	if len(e.Label) > MaxLabelLen {
		// gen_esp32part.py cuts it silently; the device sees the cut name.
		e.Label = e.Label[:MaxLabelLen]
	}
	if strings.ContainsRune(e.Label, 0) {
		return row, lineErr(lineNo, "name %q contains a NUL byte", e.Label)
	}

	if fields[1] == "" {
		return row, lineErr(lineNo, "type is empty (want app, data, bootloader, partition_table or a number)")
	}
	typ, err := parseKeywordOrNumber(fields[1], typeKeywords())
	if err != nil {
		return row, lineErr(lineNo, "type: %v", err)
	}
	if typ < 0 || typ > 0xFF {
		return row, lineErr(lineNo, "type %s is out of range 0–255", fields[1])
	}
	e.Type = uint8(typ)

	if fields[2] == "" {
		if e.Type == TypeApp {
			return row, lineErr(lineNo, "an app partition needs a subtype (factory, ota_0…ota_15, test)")
		}
		e.SubType = SubTypeDataUndefined
	} else {
		sub, err := parseKeywordOrNumber(fields[2], subTypeKeywords(e.Type))
		if err != nil {
			return row, lineErr(lineNo, "subtype: %v", err)
		}
		if sub < 0 || sub > 0xFF {
			return row, lineErr(lineNo, "subtype %s is out of range 0–255", fields[2])
		}
		e.SubType = uint8(sub)
	}

	if err := parseOffset(&row, fields[3], opts); err != nil {
		return row, lineErr(lineNo, "offset: %v", err)
	}
	if err := parseSizeField(&row, fields[4], opts); err != nil {
		return row, lineErr(lineNo, "size: %v", err)
	}

	for _, f := range strings.Split(fields[5], ":") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		bit, ok := knownFlags[strings.ToLower(f)]
		if !ok {
			return row, lineErr(lineNo, "unknown flag %q (known: encrypted, readonly; separate them with ':')", f)
		}
		e.Flags |= bit
	}
	return row, nil
}

// checkEnvVar rejects $NAME and ${NAME}: gen_esp32part.py expands them from
// the environment, which a pure parser cannot do faithfully.
func checkEnvVar(line string) error {
	for i := 0; i < len(line)-1; i++ {
		if line[i] != '$' {
			continue
		}
		c := line[i+1]
		if c == '{' || c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') {
			end := i + 2
			for end < len(line) && (line[end] == '_' || line[end] == '}' || isAlnum(line[end])) {
				end++
			}
			return fmt.Errorf("environment variable %q: variables are not expanded here; substitute the value first (gen_esp32part.py expands them at build time)", line[i:end])
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return (c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'z')
}

func isNA(s string) bool { return strings.EqualFold(s, "N/A") }

func parseOffset(row *csvRow, s string, opts Options) error {
	e := &row.e
	empty := s == "" || (isNA(s) && (e.Type == TypeBootloader || e.Type == TypePartitionTable))
	switch {
	case e.Type == TypeBootloader && e.SubType == SubTypeBootloaderPrimary:
		// gen_esp32part.py ignores the column: the build configuration
		// decides where the primary bootloader and table are.
		row.fixedPlace = true
		e.Offset, row.offsetSet = opts.BootloaderOffset, true
		return nil
	case e.Type == TypePartitionTable && e.SubType == SubTypePartitionTablePrimary:
		row.fixedPlace = true
		e.Offset, row.offsetSet = opts.tableOffset(), true
		return nil
	case e.Type == TypeBootloader && e.SubType == SubTypeBootloaderRecovery:
		// gen_esp32part.py always takes --recovery-bootloader-offset; without
		// it we accept the column rather than refuse the table.
		if opts.RecoveryBootloaderOffset != 0 {
			e.Offset, row.offsetSet = opts.RecoveryBootloaderOffset, true
			return nil
		}
		if empty {
			return errors.New("a recovery bootloader row needs an offset (the build sets it with --recovery-bootloader-offset)")
		}
	}
	if empty {
		return nil
	}
	if isNA(s) {
		return errors.New("N/A is only allowed for bootloader and partition_table rows")
	}
	v, err := parseNumber(s)
	if err != nil {
		return err
	}
	if v < 0 || v > math.MaxUint32 {
		return fmt.Errorf("%s is out of range 0–0xFFFFFFFF", s)
	}
	e.Offset, row.offsetSet = uint32(v), true
	return nil
}

func parseSizeField(row *csvRow, s string, opts Options) error {
	switch row.e.Type {
	case TypeBootloader:
		// Computed like gen_esp32part.py, which ignores this column: the
		// space between the primary bootloader and the table.
		row.size = int64(opts.tableOffset()) - int64(opts.BootloaderOffset)
		return nil
	case TypePartitionTable:
		row.size = TableSectorSize
		return nil
	}
	if s == "" {
		return errors.New("size is empty")
	}
	if isNA(s) {
		return errors.New("N/A is only allowed for bootloader and partition_table rows")
	}
	v, err := parseNumber(s)
	if err != nil {
		return err
	}
	if v < -math.MaxUint32 || v > math.MaxUint32 {
		return fmt.Errorf("%s is out of range", s)
	}
	row.size = v
	return nil
}

func typeKeywords() map[string]uint8 {
	m := make(map[string]uint8, len(typeNames))
	for v, n := range typeNames {
		m[n] = v
	}
	return m
}

func subTypeKeywords(typ uint8) map[string]uint8 {
	m := make(map[string]uint8, len(subTypeNames[typ]))
	for v, n := range subTypeNames[typ] {
		m[n] = v
	}
	return m
}

// parseKeywordOrNumber looks s up (case-insensitively) in keywords, then
// tries it as a number.
func parseKeywordOrNumber(s string, keywords map[string]uint8) (int64, error) {
	if v, ok := keywords[strings.ToLower(s)]; ok {
		return int64(v), nil
	}
	v, err := parseNumber(s)
	if err == nil {
		return v, nil
	}
	if len(keywords) == 0 {
		return 0, fmt.Errorf("%q is not a number (this type has no subtype keywords)", s)
	}
	names := make([]string, 0, len(keywords))
	for n := range keywords {
		names = append(names, n)
	}
	sort.Strings(names)
	return 0, fmt.Errorf("%q is not a number or a known keyword (%s)", s, strings.Join(names, ", "))
}

// parseNumber is gen_esp32part.py's parse_int: Python int(s, 0) (decimal
// without leading zeros, 0x, 0o, 0b, underscores between digits, a sign)
// with one optional K/M suffix.
func parseNumber(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult, s = 1<<10, s[:n-1]
		case 'm', 'M':
			mult, s = 1<<20, s[:n-1]
		}
	}
	neg := false
	body := s
	if body != "" && (body[0] == '-' || body[0] == '+') {
		neg, body = body[0] == '-', body[1:]
	}
	if body == "" || body[0] == '_' {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	isPrefixed := len(body) > 1 && body[0] == '0' && strings.ContainsRune("xXoObB", rune(body[1]))
	if !isPrefixed && len(strings.TrimLeft(body, "0_")) > 0 && body[0] == '0' {
		return 0, fmt.Errorf("%q: a leading zero is not allowed (write 0o… for octal)", s)
	}
	u, err := strconv.ParseUint(body, 0, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if u > math.MaxInt64/uint64(mult) {
		return 0, fmt.Errorf("%q is too large", s)
	}
	v := int64(u) * mult
	if neg {
		v = -v
	}
	return v, nil
}

// FormatCSV renders t in gen_esp32part.py's CSV style (keywords, hex
// offsets, K/M sizes). Offsets are written except for the primary
// bootloader and partition-table rows ("N/A", as their place comes from
// Options), so ParseCSVWith with the Options the table was made with reads
// the same table back. It fails for labels a CSV cannot
// hold (commas, line breaks, NUL, leading '#', surrounding spaces, $NAME,
// invalid UTF-8) and for flag bits without a name.
func (t Table) FormatCSV() (string, error) {
	var b strings.Builder
	b.WriteString("# ESP-IDF Partition Table\n# Name, Type, SubType, Offset, Size, Flags\n")
	for i, e := range t {
		if err := csvLabelOK(e.Label); err != nil {
			return "", fmt.Errorf("partition %d %q: %w", i, e.Label, err)
		}
		if e.Flags&^(FlagEncrypted|FlagReadOnly) != 0 {
			return "", fmt.Errorf("partition %d %q: flags 0x%x have bits a CSV cannot express", i, e.Label, e.Flags)
		}
		off, size := fmt.Sprintf("0x%x", e.Offset), FormatSize(int64(e.Size))
		if isFixedPlace(e) {
			off = "N/A" // taken from Options when read back, as gen_esp32part.py does
		}
		if e.Type == TypeBootloader || e.Type == TypePartitionTable {
			size = "N/A"
		}
		fmt.Fprintf(&b, "%s,%s,%s,%s,%s,%s\n", e.Label, e.TypeName(), e.SubTypeName(), off, size, flagNames(e.Flags))
	}
	return b.String(), nil
}

func csvLabelOK(l string) error {
	switch {
	case !utf8.ValidString(l):
		return errors.New("label is not valid UTF-8")
	case strings.ContainsAny(l, ",\n\r\x00"):
		return errors.New("label contains a comma, line break or NUL")
	case strings.TrimSpace(l) != l:
		return errors.New("label has leading or trailing white space")
	case strings.HasPrefix(l, "#"):
		return errors.New("label starts with '#'")
	case checkEnvVar(l) != nil:
		return errors.New("label contains '$' followed by a name")
	}
	return nil
}
