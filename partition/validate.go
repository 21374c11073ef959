package partition

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Minimum size of a read-write NVS partition (gen_esp32part.py).
const nvsMinRWSize = 0x3000

// OTADataSize is the required size of the otadata partition: two 4 KB sectors.
const OTADataSize = 0x2000

// Validate applies gen_esp32part.py's layout rules (its "verify" step, which
// the ESP-IDF build always runs): offsets aligned (64 KB for apps, 4 KB for
// everything else), app sizes 4 KB multiples (64 KB with Secure Boot v1),
// unique names, no overlaps, nothing but the primary bootloader and
// partition-table rows below the end of the table's sector, at most one
// otadata (and one tee_ota) partition and it exactly 0x2000 bytes,
// otadata/coredump not readonly, read-write NVS at least 0x3000 bytes, and
// at most MaxEntries partitions.
//
// ParseCSV calls it; ParseBinary does not, because the bootloader itself only
// checks the binary structure and a table it boots from should be readable.
func (t Table) Validate(opts Options) error {
	return validate(t, nil, nil, opts)
}

// validate is Validate with CSV line numbers (lines[i] for t[i]) for
// messages, and the names as written (names[i]; labels may have been cut to
// 16 bytes): like gen_esp32part.py, uniqueness is checked on those.
func validate(t Table, lines []int, names []string, opts Options) error {
	fullName := func(i int) string {
		if i < len(names) {
			return names[i]
		}
		return t[i].Label
	}
	name := func(i int) string {
		s := fmt.Sprintf("partition %q", fullName(i))
		if i < len(lines) {
			s += fmt.Sprintf(" (line %d)", lines[i])
		}
		return s
	}
	if len(t) == 0 {
		return errors.New("the table has no partitions")
	}
	if len(t) > MaxEntries {
		return fmt.Errorf("%d partitions; the binary table holds at most %d", len(t), MaxEntries)
	}
	tableOff := opts.tableOffset()
	appSizeAlign := uint32(SectorAlignment)
	if opts.SecureBootV1 {
		appSizeAlign = AppAlignment
	}
	for i, e := range t {
		if align := offsetAlignment(e.Type); e.Offset%align != 0 {
			return fmt.Errorf("%s: offset 0x%x is not aligned to 0x%x", name(i), e.Offset, align)
		}
		if e.Type == TypeApp && e.Size%appSizeAlign != 0 {
			return fmt.Errorf("%s: app size 0x%x is not a multiple of 0x%x", name(i), e.Size, appSizeAlign)
		}
		if e.End() > 1<<32 {
			return fmt.Errorf("%s: ends at 0x%x, beyond the 4 GB address space", name(i), e.End())
		}
		if e.Type == TypeData && (e.SubType == SubTypeDataOTA || e.SubType == SubTypeDataCoredump) && e.ReadOnly() {
			return fmt.Errorf("%s: a data/%s partition is always read-write and cannot be readonly", name(i), e.SubTypeName())
		}
		if e.Type == TypeData && e.SubType == SubTypeDataNVS && e.Size < nvsMinRWSize && !e.ReadOnly() {
			return fmt.Errorf("%s: read-write NVS must be at least 0x%x bytes (is 0x%x); flag it readonly or make it larger",
				name(i), nvsMinRWSize, e.Size)
		}
	}

	seen := make(map[string]int, len(t))
	for i := range t {
		if j, ok := seen[fullName(i)]; ok {
			return fmt.Errorf("%s and %s: partition names must be unique", name(j), name(i))
		}
		seen[fullName(i)] = i
	}

	order := make([]int, len(t))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return t[order[a]].Offset < t[order[b]].Offset })
	for k, i := range order {
		e := t[i]
		if uint64(e.Offset) < uint64(tableOff)+TableSectorSize && !isFixedPlace(e) {
			return fmt.Errorf("%s: offset 0x%x is below 0x%x, the end of the partition table sector", name(i), e.Offset, uint64(tableOff)+TableSectorSize)
		}
		if k > 0 {
			p := order[k-1]
			if uint64(e.Offset) < t[p].End() {
				return fmt.Errorf("%s at 0x%x overlaps %s (0x%x–0x%x)", name(i), e.Offset, name(p), t[p].Offset, t[p].End()-1)
			}
		}
	}

	for _, sub := range []uint8{SubTypeDataOTA, SubTypeDataTEEOTA} {
		var found []string
		for i, e := range t {
			if e.Type == TypeData && e.SubType == sub {
				found = append(found, name(i))
				if e.Size != OTADataSize {
					return fmt.Errorf("%s: a data/%s partition must be exactly 0x%x bytes (is 0x%x)", name(i), SubTypeName(TypeData, sub), OTADataSize, e.Size)
				}
			}
		}
		if len(found) > 1 {
			return fmt.Errorf("more than one data/%s partition: %s", SubTypeName(TypeData, sub), strings.Join(found, ", "))
		}
	}
	return nil
}

// isFixedPlace reports the rows that describe the primary bootloader and
// partition table, which live below the first partition.
func isFixedPlace(e Entry) bool {
	return (e.Type == TypeBootloader && e.SubType == SubTypeBootloaderPrimary) ||
		(e.Type == TypePartitionTable && e.SubType == SubTypePartitionTablePrimary)
}
