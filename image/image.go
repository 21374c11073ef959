// Package image identifies, parses, validates and builds ESP32-family
// application images. It works on bytes only and knows nothing about files
// or networks.
//
// Parse tells what a file is (Kind: app, bootloader, partition table, merged
// factory image, ELF, ESP8266 image, archive, …) and decodes the image
// header, segments, checksum, appended SHA-256, esp_app_desc_t,
// esp_bootloader_desc_t and Secure Boot signatures. Validate applies a
// Policy (device chip, OTA slot size, running project and version) and
// returns errors that must stop an upload and warnings that need not, each
// with a stable Code and a hint. Build makes valid images for tests and
// simulators. The formats are described in research/esp-image.md.
package image

// Kind names what a file is, as far as an OTA upload is concerned. The
// values are stable snake_case names (the CLI prints them in --json).
type Kind string

// Kinds of file. Only KindApp may be uploaded as firmware.
const (
	KindApp            Kind = "app"
	KindBootloader     Kind = "bootloader"
	KindPartitionTable Kind = "partition_table"
	KindMerged         Kind = "merged"
	KindELF            Kind = "elf"
	KindESP8266        Kind = "esp8266"
	KindGzip           Kind = "gzip"
	KindZip            Kind = "zip"
	KindIntelHex       Kind = "intel_hex"
	KindUF2            Kind = "uf2"
	KindEncrypted      Kind = "encrypted"
	KindLittleFS       Kind = "littlefs"
	KindEmpty          Kind = "empty"
	KindUnknown        Kind = "unknown"
)

// Chip is the esp_chip_id_t stored at header offset 12.
type Chip uint16

// Known chip ids (research/esp-image.md §1.3).
const (
	ChipESP32    Chip = 0
	ChipESP32S2  Chip = 2
	ChipESP32C3  Chip = 5
	ChipESP32S3  Chip = 9
	ChipESP32C2  Chip = 12
	ChipESP32C6  Chip = 13
	ChipESP32H2  Chip = 16
	ChipESP32P4  Chip = 18
	ChipESP32C61 Chip = 20
	ChipESP32C5  Chip = 23
	ChipESP32H21 Chip = 25
	ChipESP32H4  Chip = 28
	ChipESP32E22 Chip = 31
	ChipESP32S31 Chip = 32
)
