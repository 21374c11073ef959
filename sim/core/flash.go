package core

// The flash model: three app slots and the two otadata entries, with the
// rules of ESP-IDF's app_update and bootloader (research/esp-image.md §4.3):
//
//   - esp_ota_set_boot_partition writes the other otadata sector with the
//     next sequence number that selects the slot, state NEW (rollback on)
//     or UNDEFINED (rollback off);
//   - the bootloader turns a PENDING_VERIFY entry into ABORTED, picks the
//     valid entry with the larger sequence number (none → factory), and
//     turns its NEW into PENDING_VERIFY;
//   - the app marks its entry VALID, or INVALID before rebooting.
//
// All methods must be called with the device's mutex held.

// AppState is an ESP-IDF esp_ota_img_states_t, by its contract name.
type AppState string

// App states (device-contract.md §4 names).
const (
	StateNew           AppState = "new"
	StatePendingVerify AppState = "pending_verify"
	StateValid         AppState = "valid"
	StateInvalid       AppState = "invalid"
	StateAborted       AppState = "aborted"
	StateUndefined     AppState = "undefined"
)

// Slot indexes.
const (
	slotFactory = 0
	slotOTA0    = 1
	slotOTA1    = 2
	numSlots    = 3
)

// slotLabels are the partition labels of the ESP-IDF layout (the seed's and
// OTS's partitions.csv); arduinoLabels those of arduino-esp32's
// tools/partitions/default.csv, which has no factory slot.
var (
	slotLabels    = [numSlots]string{"factory", "ota_0", "ota_1"}
	arduinoLabels = [numSlots]string{"", "app0", "app1"}
)

const seqErased = 0xFFFFFFFF

type otaEntry struct {
	seq   uint32 // seqErased = erased sector
	state AppState
}

// valid is bootloader_common_ota_select_valid: written and not
// invalid/aborted (the sim's entries always have a correct CRC).
func (e otaEntry) valid() bool {
	return e.seq != seqErased && e.seq != 0 && e.state != StateInvalid && e.state != StateAborted
}

// slotIndex is the app slot the entry selects: ota_((seq-1) % 2).
func (e otaEntry) slotIndex() int { return slotOTA0 + int((e.seq-1)%2) }

type flash struct {
	slotSize  int64
	rollback  bool // CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
	noFactory bool // the partition table has no factory slot (Arduino)
	labels    [numSlots]string
	slots     [numSlots]*blob
	otadata   [2]otaEntry
	running   int
	// fsSize is the data/spiffs partition's size (0: none); fs what was
	// last written there.
	fsSize int64
	fs     *blob
	// uploaded marks the slots whose image arrived by upload (the key
	// BehaveUploaded), as opposed to the images the device started with.
	uploaded [numSlots]bool
}

func newFlash(slotSize int64, rollback bool, factory *blob) *flash {
	f := &flash{slotSize: slotSize, rollback: rollback, running: slotFactory, labels: slotLabels}
	f.slots[slotFactory] = factory
	f.otadata[0] = otaEntry{seq: seqErased, state: StateUndefined}
	f.otadata[1] = otaEntry{seq: seqErased, state: StateUndefined}
	return f
}

// newArduinoFlash is arduino-esp32's default.csv: app0 and app1, no
// factory, a spiffs partition. The sketch was flashed over serial into
// app0 with otadata erased, so the bootloader runs app0.
func newArduinoFlash(slotSize, fsSize int64, factory *blob) *flash {
	f := newFlash(slotSize, true, nil)
	f.noFactory, f.labels, f.fsSize = true, arduinoLabels, fsSize
	f.slots[slotOTA0] = factory
	f.running = slotOTA0
	return f
}

// fsLabel is the label of the filesystem partition (default.csv's spiffs).
const fsLabel = "spiffs"

// label is a slot's partition label.
func (f *flash) label(slot int) string { return f.labels[slot] }

// firstSlot is where the bootloader starts without a valid otadata entry:
// factory, or ota_0 when the table has none.
func (f *flash) firstSlot() int {
	if f.noFactory {
		return slotOTA0
	}
	return slotFactory
}

// active is bootloader_common_get_active_otadata: -1 when neither entry is valid.
func (f *flash) active() int {
	a, b := f.otadata[0].valid(), f.otadata[1].valid()
	switch {
	case a && b:
		if f.otadata[1].seq > f.otadata[0].seq {
			return 1
		}
		return 0
	case a:
		return 0
	case b:
		return 1
	}
	return -1
}

// bootSlot is esp_ota_get_boot_partition: what otadata selects now.
func (f *flash) bootSlot() int {
	if i := f.active(); i >= 0 {
		return f.otadata[i].slotIndex()
	}
	return f.firstSlot()
}

// stateOf is esp_ota_get_state_partition; ok is false for the factory slot
// and for slots no otadata entry names.
func (f *flash) stateOf(slot int) (AppState, bool) {
	if slot == slotFactory {
		return StateUndefined, false
	}
	best := -1
	for i, e := range f.otadata {
		if e.seq == seqErased || e.seq == 0 || e.slotIndex() != slot {
			continue
		}
		if best < 0 || e.seq > f.otadata[best].seq {
			best = i
		}
	}
	if best < 0 {
		return StateUndefined, false
	}
	return f.otadata[best].state, true
}

// runningState is the state reported for the running app.
func (f *flash) runningState() AppState {
	st, _ := f.stateOf(f.running)
	return st
}

// entryFor returns the index of the newest otadata entry naming slot, or -1.
func (f *flash) entryFor(slot int) int {
	best := -1
	for i, e := range f.otadata {
		if e.seq == seqErased || e.seq == 0 || slot == slotFactory || e.slotIndex() != slot {
			continue
		}
		if best < 0 || e.seq > f.otadata[best].seq {
			best = i
		}
	}
	return best
}

// nextUpdateSlot is esp_ota_get_next_update_partition(NULL): the OTA slot
// after the running one (factory → ota_0).
func (f *flash) nextUpdateSlot() int {
	if f.running == slotOTA0 {
		return slotOTA1
	}
	return slotOTA0
}

// beginBlocked reports esp_ota_begin's ESP_ERR_OTA_ROLLBACK_INVALID_STATE:
// with rollback on, a running app that has not confirmed itself may not
// start another update.
func (f *flash) beginBlocked() bool {
	return f.rollback && f.runningState() == StatePendingVerify
}

// erase wipes a slot (esp_ota_begin, or the first sectors of an espota write).
func (f *flash) erase(slot int) { f.slots[slot], f.uploaded[slot] = nil, false }

// preinstall is a device updated once before it was handed over: the
// running image in ota_0, selected by a valid otadata entry, the factory
// app kept in its slot.
func (f *flash) preinstall(b *blob) {
	f.slots[slotOTA0] = b
	st := StateUndefined
	if f.rollback {
		st = StateValid
	}
	f.otadata[0] = otaEntry{seq: 1, state: st}
}

// eraseOtadata is esp_ota_set_boot_partition(factory) (and the
// bootloader's factory reset): both entries erased, the factory app boots.
func (f *flash) eraseOtadata() {
	f.otadata[0] = otaEntry{seq: seqErased, state: StateUndefined}
	f.otadata[1] = otaEntry{seq: seqErased, state: StateUndefined}
}

// selectBoot is esp_ota_set_boot_partition on a slot that holds its image
// already: factory erases otadata, an OTA slot gets a new entry.
func (f *flash) selectBoot(slot int) {
	if slot == slotFactory {
		f.eraseOtadata()
		return
	}
	up := f.uploaded[slot]
	f.setBoot(slot, f.slots[slot])
	f.uploaded[slot] = up
}

// setBoot stores the image in slot and is esp_ota_set_boot_partition.
func (f *flash) setBoot(slot int, b *blob) {
	f.slots[slot] = b
	f.uploaded[slot] = true
	newState := StateUndefined
	if f.rollback {
		newState = StateNew
	}
	want := uint32(slot - slotOTA0) // ota index
	a := f.active()
	if a < 0 {
		f.otadata[0] = otaEntry{seq: want + 1, state: newState}
		return
	}
	// The smallest sequence ≥ the active one that selects the slot
	// (esp_rewrite_ota_data's loop).
	seq := f.otadata[a].seq
	base := (want + 1) % 2
	i := uint32(0)
	for seq > base+i*2 {
		i++
	}
	f.otadata[1-a] = otaEntry{seq: base + i*2, state: newState}
}

// bootResult says what the bootloader did.
type bootResult struct {
	slot     int
	aborted  int  // slot whose PENDING_VERIFY entry became ABORTED, or -1
	fallback bool // the selected slot held no image; another one was booted
	noImage  bool // nothing bootable at all
	selected int  // slot otadata selected before any fallback
}

// boot runs the second-stage bootloader's slot choice and sets running.
func (f *flash) boot() bootResult {
	r := bootResult{aborted: -1}
	if f.rollback {
		for i := range f.otadata {
			if f.otadata[i].state == StatePendingVerify && f.otadata[i].seq != seqErased {
				f.otadata[i].state = StateAborted
				r.aborted = f.otadata[i].slotIndex()
			}
		}
	}
	r.selected = f.firstSlot()
	if a := f.active(); a >= 0 {
		r.selected = f.otadata[a].slotIndex()
		if f.rollback && f.otadata[a].state == StateNew {
			f.otadata[a].state = StatePendingVerify
		}
	}
	r.slot = r.selected
	if f.slots[r.slot] == nil {
		// The image fails verification: try lower slots down to factory,
		// then higher ones.
		r.fallback = true
		r.noImage = true
		for _, s := range fallbackOrder(r.selected) {
			if f.slots[s] != nil {
				r.slot, r.noImage = s, false
				break
			}
		}
	}
	f.running = r.slot
	return r
}

func fallbackOrder(from int) []int {
	var order []int
	for s := from - 1; s >= 0; s-- {
		order = append(order, s)
	}
	for s := from + 1; s < numSlots; s++ {
		order = append(order, s)
	}
	return order
}

// markValid is esp_ota_mark_app_valid_cancel_rollback.
func (f *flash) markValid() bool {
	i := f.entryFor(f.running)
	if i < 0 || f.otadata[i].state != StatePendingVerify {
		return false
	}
	f.otadata[i].state = StateValid
	return true
}

// rollbackPossible is esp_ota_check_rollback_is_possible: another slot
// holds an image the bootloader could run.
func (f *flash) rollbackPossible() bool {
	for s := range f.slots {
		if s == f.running || f.slots[s] == nil {
			continue
		}
		if s == slotFactory {
			return true
		}
		if i := f.entryFor(s); i >= 0 && f.otadata[i].valid() {
			return true
		}
	}
	return false
}

// markInvalid is the state change of esp_ota_mark_app_invalid_rollback_and_reboot;
// false when rollback is impossible (the app keeps running then).
func (f *flash) markInvalid() bool {
	if !f.rollback || !f.rollbackPossible() {
		return false
	}
	i := f.entryFor(f.running)
	if i < 0 {
		return false
	}
	f.otadata[i].state = StateInvalid
	return true
}

// info returns the running image's description.
func (f *flash) runningInfo() imgInfo {
	if b := f.slots[f.running]; b != nil {
		return b.info
	}
	return imgInfo{}
}
