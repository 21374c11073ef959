// Package espota is the ArduinoOTA ("espota") device family on sim/core.
//
// The wire server (server.go, transfer.go) is the device side of the
// protocol: the UDP invitation/auth exchange, the TCP connect-back and the
// data phase with its byte-count acknowledgements, as arduino-esp32 (core
// ≤ 3.3.0 MD5 and ≥ 3.3.1 PBKDF2) and esp8266/Arduino implement them. A
// device plugs its flash model in through [Updater]; everything on the
// wire is decided here. See research/espota.md §1–§2 for the facts
// mirrored, and docs/protocols/espota.md for the wire facts with sources.
//
// The personalities (device.go) are sketches running ArduinoOTA on a
// sim/core device: arduino (arduino-esp32, UDP 3232, arduino-esp32's
// default.csv with a spiffs partition that espota -s writes) and esp8266
// (esp8266/Arduino, UDP 8266, no rollback). Their Update class:
//
//   - erases sector by sector while writing, buffers the first 4096 bytes
//     (SPI_FLASH_SEC_SIZE) and takes a first byte other than 0xE9 for an
//     encrypted image: "Decryption error" (arduino-esp32);
//   - reports image verification failures as "Could Not Activate The
//     Firmware", and reboots about 110 ms after its final OK;
//   - on ESP8266 checks the magic byte and the MD5 only (the factory image is
//     a stand-in: package image cannot make ESP8266 images).
//
// mDNS: _arduino._tcp with ArduinoOTA's TXT keys (board, tcp_check,
// ssh_upload, auth_upload) in each core's wire order.
package espota
