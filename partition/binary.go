package partition

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Binary entry magics.
const (
	entryMagic = 0x50AA // bytes AA 50
	md5Magic   = 0xEBEB // bytes EB EB
	endMagic   = 0xFFFF
)

// ParseBinary reads a binary partition table: 32-byte entries (magic AA 50,
// type, subtype, offset, size, NUL-padded 16-byte label, flags), an optional
// MD5 entry (EB EB, 14×FF, MD5 of all preceding entries; it must match and
// may appear once), and an end marker. Like the bootloader, the end marker is
// an entry starting FF FF FF FF (magic, type and subtype 0xFF), the first
// entry may not be one, and it must come within the first MaxTableLen bytes.
// b may be longer (a whole 4 KB sector or a flash dump starting at the table);
// bytes after the end marker are ignored.
//
// Unknown flag bits are kept. The layout rules of Validate are not applied.
func ParseBinary(b []byte) (Table, error) {
	var t Table
	md5Seen := false
	for i := 0; i*EntrySize < MaxTableLen; i++ {
		off := i * EntrySize
		if off+EntrySize > len(b) {
			if len(b) == 0 {
				return nil, errors.New("empty input")
			}
			return nil, fmt.Errorf("table is cut off at %d bytes, inside entry %d (offset 0x%x), before an end marker", len(b), i, off)
		}
		ent := b[off : off+EntrySize]
		switch binary.LittleEndian.Uint16(ent) {
		case entryMagic:
			t = append(t, decodeEntry(ent))
		case md5Magic:
			if md5Seen {
				return nil, fmt.Errorf("entry %d (offset 0x%x): a second MD5 entry; only one is allowed", i, off)
			}
			md5Seen = true
			want := md5.Sum(b[:off])
			if !bytes.Equal(ent[16:32], want[:]) {
				return nil, fmt.Errorf("entry %d (offset 0x%x): MD5 mismatch: the table says %s, entries 0–%d hash to %s (corrupted table?)",
					i, off, hex.EncodeToString(ent[16:32]), i-1, hex.EncodeToString(want[:]))
			}
		default:
			if isEndMarker(ent) {
				if i == 0 {
					return nil, errors.New("the first entry is an end marker: the table is empty or the flash is erased")
				}
				return t, nil
			}
			return nil, fmt.Errorf("entry %d (offset 0x%x): bad magic %02X %02X (want AA 50 for a partition, EB EB for the MD5 entry, FF FF for the end)",
				i, off, ent[0], ent[1])
		}
	}
	return nil, fmt.Errorf("no end marker within the first 0x%x bytes (%d entries)", MaxTableLen, MaxTableLen/EntrySize)
}

func isEndMarker(ent []byte) bool {
	return binary.LittleEndian.Uint16(ent) == endMagic && ent[2] == 0xFF && ent[3] == 0xFF
}

func decodeEntry(ent []byte) Entry {
	label := ent[12:28]
	if n := bytes.IndexByte(label, 0); n >= 0 {
		label = label[:n]
	}
	return Entry{
		Label:   string(label),
		Type:    ent[2],
		SubType: ent[3],
		Offset:  binary.LittleEndian.Uint32(ent[4:]),
		Size:    binary.LittleEndian.Uint32(ent[8:]),
		Flags:   binary.LittleEndian.Uint32(ent[28:]),
	}
}

// MarshalBinary encodes t as gen_esp32part.py does: the entries, the MD5
// entry, then 0xFF up to MaxTableLen bytes (the first 32 of which are the end
// marker). It fails for more than MaxEntries partitions, labels longer than
// 16 bytes or containing NUL. It does not apply Validate's layout rules, so
// tests can build deliberately odd tables.
func (t Table) MarshalBinary() ([]byte, error) {
	if len(t) > MaxEntries {
		return nil, fmt.Errorf("%d partitions; the binary table holds at most %d", len(t), MaxEntries)
	}
	out := make([]byte, 0, MaxTableLen)
	for i, e := range t {
		if len(e.Label) > MaxLabelLen {
			return nil, fmt.Errorf("partition %d: label %q is %d bytes; at most %d fit", i, e.Label, len(e.Label), MaxLabelLen)
		}
		if bytes.IndexByte([]byte(e.Label), 0) >= 0 {
			return nil, fmt.Errorf("partition %d: label %q contains a NUL byte", i, e.Label)
		}
		var ent [EntrySize]byte
		binary.LittleEndian.PutUint16(ent[0:], entryMagic)
		ent[2], ent[3] = e.Type, e.SubType
		binary.LittleEndian.PutUint32(ent[4:], e.Offset)
		binary.LittleEndian.PutUint32(ent[8:], e.Size)
		copy(ent[12:28], e.Label)
		binary.LittleEndian.PutUint32(ent[28:], e.Flags)
		out = append(out, ent[:]...)
	}
	sum := md5.Sum(out)
	out = append(out, 0xEB, 0xEB)
	out = append(out, bytes.Repeat([]byte{0xFF}, 14)...)
	out = append(out, sum[:]...)
	for len(out) < MaxTableLen {
		out = append(out, 0xFF)
	}
	return out, nil
}
