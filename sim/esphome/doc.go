// Package esphome is the ESPHome device family on sim/core: a node running
// ESPHome's native OTA ("esphome" OTA platform) on its own TCP protocol,
// and advertising _esphomelib._tcp. Personalities: esphome (ESP32, ESP-IDF,
// OTA port 3232) and esphome-esp8266 (ESP8266, OTA port 8266, offers gzip).
//
// It is written from the device's side of the protocol, never from a
// client (research/uploaders.md §8 and docs/protocols/esphome.md have the
// wire facts). Sources read (esphome/esphome):
//
//   - esphome/components/esphome/ota/ota_esphome.cpp @ 015decce4d72
//     (2026: non-blocking handshake with a 20 s deadline from accept,
//     listen(1), extended answer 48 + server flags, SHA-256 auth required
//     for a password, one 41 per session at the start of the data phase,
//     OTA type byte, 2 s socket timeouts and 90 s without data → FF, per
//     8192 bytes a 47 in protocol 2, 44, backend end, 45, a final byte
//     read as non-fatal, close, 10 + 100 ms, reboot; any error: one byte,
//     close, backend abort);
//   - the same file @ 33fdbbe (2024.11.0-dev: every handshake read and
//     write gives up after 1 s, data reads never time out, MD5 auth with
//     the nonce the MD5 hex of 8 random hex digits, 01 + nonce then 41);
//     the 2025 revisions with ALLOW_OTA_DOWNGRADE_MD5 (SHA-256 when the
//     client flags 0x02, else MD5);
//   - components/ota/ota_backend.h (response and error bytes),
//     ota_backend_esp_idf.cpp (begin: no partition 8A, size 89; write:
//     first byte not 0xE9 → 80, flash 83; end: MD5 8B, image 84),
//     ota_backend_esp8266.cpp @ 062195be (begin: boot mode 85, flash
//     config 86, space 88; MD5 8B; first byte neither 0xE9 nor gzip → 84;
//     gzip is staged as is and inflated by eboot), and for 2024 firmware
//     ota_backend_arduino_esp8266.{h,cpp} (the Arduino Updater: every end
//     failure, MD5 too, is 84; compression offered for core ≥ 2.7.0);
//   - components/mdns/mdns_component.cpp (the _esphomelib._tcp TXT keys
//     and their order) and components/esp32/__init__.py (an ESP-IDF
//     build's version.txt holds the ESPHome release).
//
// # What it models
//
// Options (core.Config.Options) chooses the build: protocol version 1 or
// 2, the extended protocol or not, how a password is challenged (md5,
// sha256, sha256-md5), compression offered, the 2024 timing (1 s per
// handshake read) or the current one, Noise offered or required, and one
// error byte to answer (Fail) at the step where the firmware sends it.
// The general faults of the core apply (drop, stall, error → 83, slow,
// trickle, power-loss, refuse, latency, no-reboot, no-return).
//
// The server takes one client at a time: a second one waits in the
// listen backlog until the first is done, and is reset by the reboot when
// the first one installed an image. The reboot is silent (no mDNS goodbye,
// connections time out); at boot the device announces _esphomelib._tcp
// again with the new image's identity.
//
// # Identity across an update
//
// ESPHome does not put its project version or config hash in a place an
// image reader can find: an ESP-IDF build's app description carries the
// ESPHome release (version.txt), and project_version and config_hash are
// string constants compiled into the code. The sim therefore takes an
// image's identity from what package image and `ots-ota sim image` write:
// the app description's version on ESP32, the readable "version=" marker
// of a sim ESP8266 image (gzip payloads are inflated first). That version
// is the new TXT project_version, and the config_hash is derived from
// project name and version (same version, same hash: a rebuild of the
// same YAML), unless Options.Identities names the version. The TXT key
// version always stays the ESPHome release (Options.Release).
//
// Not modelled: Noise (a client asking for it gets the connection closed
// after the 48 answer), partition-table and bootloader updates (OTA types
// 01 and 02 are answered 8E even where partition access is advertised),
// the UDP data phase, the native API (the TXT record names port 6053;
// nothing listens there).
package esphome
