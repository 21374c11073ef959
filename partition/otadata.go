package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
)

// OTAState is an app image's state in otadata (esp_ota_img_states_t), used
// by app rollback.
type OTAState uint32

// OTA image states.
const (
	StateNew           OTAState = 0x0 // just written; the bootloader makes it pending_verify
	StatePendingVerify OTAState = 0x1 // booted once; the app must mark it valid
	StateValid         OTAState = 0x2
	StateInvalid       OTAState = 0x3
	StateAborted       OTAState = 0x4 // rebooted while pending_verify: rolled back
	StateUndefined     OTAState = 0xFFFFFFFF
)

var stateNames = map[OTAState]string{
	StateNew:           "new",
	StatePendingVerify: "pending_verify",
	StateValid:         "valid",
	StateInvalid:       "invalid",
	StateAborted:       "aborted",
	StateUndefined:     "undefined",
}

// String is the lower-case name ("pending_verify") or, for a value IDF does
// not define, its hex value ("0x7"), which ParseOTAState reads back.
func (s OTAState) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", uint32(s))
}

// ParseOTAState reads a state name (case-insensitive; "PENDING_VERIFY" and
// "ESP_OTA_IMG_PENDING_VERIFY" work too) or a number.
func ParseOTAState(s string) (OTAState, error) {
	n := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "esp_ota_img_")
	for v, name := range stateNames {
		if n == name {
			return v, nil
		}
	}
	if v, err := strconv.ParseUint(n, 0, 32); err == nil {
		return OTAState(v), nil
	}
	return 0, fmt.Errorf("unknown OTA state %q (want new, pending_verify, valid, invalid, aborted or undefined)", s)
}

// MarshalText makes OTAState a JSON string such as "pending_verify".
func (s OTAState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText is ParseOTAState.
func (s *OTAState) UnmarshalText(b []byte) error {
	v, err := ParseOTAState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Sizes of the otadata layout.
const (
	OTASelectEntrySize = 32     // esp_ota_select_entry_t
	OTADataSectorSize  = 0x1000 // one copy per flash sector
)

// OTASeqCRC is the CRC stored in an otadata entry. It covers only the four
// bytes of ota_seq and is the ESP32 ROM's crc32_le(UINT32_MAX, …): reflected
// CRC-32 (polynomial 0xEDB88320) starting from register 0 with a final XOR
// of 0xFFFFFFFF — not zlib's CRC of those bytes. Seq 1 → 0x4743989A.
func OTASeqCRC(seq uint32) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], seq)
	// crc32.Update inverts on entry and exit, as the ROM function does, so
	// passing 0xFFFFFFFF starts the register at 0.
	return crc32.Update(math.MaxUint32, crc32.IEEETable, b[:])
}

// OTASelectEntry is one copy of esp_ota_select_entry_t.
type OTASelectEntry struct {
	Seq   uint32   // ota_seq: boot slot = (Seq-1) % number of OTA slots
	Label [20]byte // seq_label, unused by IDF (normally 0xFF)
	State OTAState
	CRC   uint32 // OTASeqCRC(Seq) when intact
}

// NewOTASelectEntry is an entry for seq and state with a correct CRC and an
// erased (0xFF) label, as esp_ota_set_boot_partition writes it.
func NewOTASelectEntry(seq uint32, state OTAState) OTASelectEntry {
	e := OTASelectEntry{Seq: seq, State: state, CRC: OTASeqCRC(seq)}
	for i := range e.Label {
		e.Label[i] = 0xFF
	}
	return e
}

// ErasedOTASelectEntry is an all-0xFF entry (erased flash).
func ErasedOTASelectEntry() OTASelectEntry {
	return OTASelectEntry{Seq: math.MaxUint32, Label: [20]byte{
		0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
		0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	}, State: StateUndefined, CRC: math.MaxUint32}
}

// ParseOTASelectEntry decodes the first 32 bytes of b.
func ParseOTASelectEntry(b []byte) (OTASelectEntry, error) {
	if len(b) < OTASelectEntrySize {
		return OTASelectEntry{}, fmt.Errorf("otadata entry needs %d bytes, have %d", OTASelectEntrySize, len(b))
	}
	var e OTASelectEntry
	e.Seq = binary.LittleEndian.Uint32(b[0:])
	copy(e.Label[:], b[4:24])
	e.State = OTAState(binary.LittleEndian.Uint32(b[24:]))
	e.CRC = binary.LittleEndian.Uint32(b[28:])
	return e, nil
}

// Bytes encodes the entry (32 bytes).
func (e OTASelectEntry) Bytes() []byte {
	b := make([]byte, OTASelectEntrySize)
	binary.LittleEndian.PutUint32(b[0:], e.Seq)
	copy(b[4:24], e.Label[:])
	binary.LittleEndian.PutUint32(b[24:], uint32(e.State))
	binary.LittleEndian.PutUint32(b[28:], e.CRC)
	return b
}

// CRCOK reports whether the stored CRC matches the sequence number.
func (e OTASelectEntry) CRCOK() bool { return e.CRC == OTASeqCRC(e.Seq) }

// Invalid is the bootloader's bootloader_common_ota_select_invalid: erased
// sequence number, or state invalid/aborted. The CRC is not looked at.
func (e OTASelectEntry) Invalid() bool {
	return e.Seq == math.MaxUint32 || e.State == StateInvalid || e.State == StateAborted
}

// Valid is bootloader_common_ota_select_valid: not Invalid and the CRC matches.
func (e OTASelectEntry) Valid() bool { return !e.Invalid() && e.CRCOK() }

// OTAData is the otadata partition: one entry at the start of each of its
// two sectors.
type OTAData [2]OTASelectEntry

// ErasedOTAData is freshly erased otadata ("no OTA yet"), what the ESP-IDF
// build flashes as ota_data_initial.bin.
func ErasedOTAData() OTAData { return OTAData{ErasedOTASelectEntry(), ErasedOTASelectEntry()} }

// ParseOTAData decodes an otadata partition image: the entries at 0x0 and
// 0x1000. b must hold at least 0x1000+32 bytes; the rest is not looked at.
func ParseOTAData(b []byte) (OTAData, error) {
	if len(b) < OTADataSectorSize+OTASelectEntrySize {
		return OTAData{}, fmt.Errorf("otadata needs at least 0x%x bytes (two sectors), have 0x%x", OTADataSectorSize+OTASelectEntrySize, len(b))
	}
	var d OTAData
	for i := range d {
		e, err := ParseOTASelectEntry(b[i*OTADataSectorSize:])
		if err != nil {
			return OTAData{}, fmt.Errorf("otadata sector %d: %w", i, err)
		}
		d[i] = e
	}
	return d, nil
}

// Bytes encodes the whole partition (OTADataSize bytes): each sector holds
// its entry followed by 0xFF, as flash does after an erase and one write.
func (d OTAData) Bytes() []byte {
	b := make([]byte, OTADataSize)
	for i := range b {
		b[i] = 0xFF
	}
	for i, e := range d {
		copy(b[i*OTADataSectorSize:], e.Bytes())
	}
	return b
}

// Active is bootloader_common_get_active_otadata: of the valid entries, the
// one with the larger sequence number (sector 0 on a tie); ok is false when
// neither is valid.
func (d OTAData) Active() (sector int, ok bool) {
	v0, v1 := d[0].Valid(), d[1].Valid()
	switch {
	case v0 && v1:
		if d[1].Seq > d[0].Seq {
			return 1, true
		}
		return 0, true
	case v0:
		return 0, true
	case v1:
		return 1, true
	}
	return -1, false
}

// BootSlot is the OTA slot index the active entry selects among otaSlots
// OTA app partitions: (seq − 1) % otaSlots. ok is false when no entry is
// valid or otaSlots is not positive (the bootloader then boots factory).
func (d OTAData) BootSlot(otaSlots int) (slot int, ok bool) {
	s, ok := d.Active()
	if !ok || otaSlots <= 0 {
		return -1, false
	}
	return int((d[s].Seq - 1) % uint32(otaSlots)), true
}

// SetBootSlot does what esp_ota_set_boot_partition does for ota_<slot>: if
// the active entry already selects slot, only its state changes; otherwise
// the other sector gets the smallest sequence number ≥ the active one that
// selects slot (seq = slot+1 in sector 0 when no entry is valid). state is
// StateNew with rollback enabled, StateUndefined without.
func (d *OTAData) SetBootSlot(slot, otaSlots int, state OTAState) error {
	if otaSlots <= 0 || otaSlots > 16 {
		return fmt.Errorf("OTA slot count %d is out of range 1–16", otaSlots)
	}
	if slot < 0 || slot >= otaSlots {
		return fmt.Errorf("OTA slot %d does not exist (there are %d)", slot, otaSlots)
	}
	act, ok := d.Active()
	if !ok {
		d[0].rewrite(uint32(slot)+1, state)
		return nil
	}
	cur := d[act].Seq
	n := uint64(otaSlots)
	// uint32 arithmetic, as in IDF: seq 0 wraps to 0xFFFFFFFF.
	if (cur-1)%uint32(otaSlots) == uint32(slot) {
		d[act].State = state
		return nil
	}
	// compute_ota_seq_for_target_slot: base + i·n, smallest not below cur.
	base := (uint64(slot) + 1) % n
	seq := base
	if uint64(cur) > base {
		seq = base + (uint64(cur)-base+n-1)/n*n
	}
	if seq >= math.MaxUint32 {
		return errors.New("OTA sequence number would overflow")
	}
	d[1-act].rewrite(uint32(seq), state)
	return nil
}

// rewrite is IDF's rewrite_ota_seq: new seq, state and CRC; the label read
// from flash is kept.
func (e *OTASelectEntry) rewrite(seq uint32, state OTAState) {
	e.Seq, e.State, e.CRC = seq, state, OTASeqCRC(seq)
}

// SetState changes the active entry's state (as esp_ota_mark_app_valid_…
// and esp_ota_mark_app_invalid_… do). It fails when no entry is valid.
func (d *OTAData) SetState(state OTAState) error {
	act, ok := d.Active()
	if !ok {
		return errors.New("otadata has no valid entry")
	}
	d[act].State = state
	return nil
}

// BootFactory is what SelectBoot returns for "boot the factory app".
const BootFactory = -1

// SelectBoot is the bootloader's choice of app (bootloader_utility_get_
// selected_boot_partition, without anti-rollback): it returns an OTA slot
// index or BootFactory, and updates the states as the bootloader writes them
// back when rollback is enabled (pending_verify → aborted before choosing,
// then new → pending_verify for the chosen entry). otaSlots is the number of
// ota_N apps; hasFactory whether a factory app exists. Trying the next image
// when the chosen one fails to load is the caller's business.
func (d *OTAData) SelectBoot(otaSlots int, hasFactory, rollback bool) int {
	if rollback {
		for i := range d {
			if d[i].State == StatePendingVerify {
				d[i].State = StateAborted
			}
		}
	}
	if (d[0].Invalid() && d[1].Invalid()) || otaSlots <= 0 {
		if hasFactory {
			return BootFactory
		}
		return 0
	}
	act, ok := d.Active()
	if !ok {
		return BootFactory // "ota data partition invalid": factory, or try all
	}
	if rollback && d[act].State == StateNew {
		d[act].State = StatePendingVerify
	}
	return int((d[act].Seq - 1) % uint32(otaSlots))
}
