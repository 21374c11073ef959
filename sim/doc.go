// Package sim simulates ESP32 (and ESP8266) devices that take firmware
// over the network the way the real firmware does, so that clients can be
// tested on loopback: curl, the seed's Python script, espota.py and
// ots-ota itself. It deliberately shares no code with package upload (a
// simulator built from the client's code would agree with its bugs); it
// reuses package image to build and verify images, sim/espota for the
// ArduinoOTA protocol and sim/mdnsd for mDNS.
//
// # Devices
//
// A Device (Start) has three app slots (factory, ota_0, ota_1; 2 MiB by
// default; the Arduino personality has arduino-esp32's default.csv: app0
// and app1 of 1.25 MiB and a spiffs partition), the two otadata entries and
// ESP-IDF's app states and rollback rules (flash.go). docs/device-behaviour.md
// in the repository lists the firmware facts mirrored, with their sources. It runs one of four personalities (device-contract.md
// §1): Seed (HTTP POST /update on 3232, Bearer auth), OTS (POST /update on
// 3232 without auth, web app on 80 with /api/status and /ota/upload),
// Arduino (espota on UDP 3232, MD5 or PBKDF2 auth) and ESP8266 (espota on
// UDP 8266). Config.Extensions adds the TXT keys and GET /ota/status that
// ots-ota documents (contract §4); without it a device shows exactly what
// the real firmware shows.
//
// # What is mirrored, and decisions where the sources are silent
//
//   - The HTTP server is a small ESP-IDF httpd look-alike (httpd.go), not
//     net/http: exact response bytes ("HTTP/1.1 <status>\r\nContent-Type:
//     text/html\r\nContent-Length: n\r\n\r\n", errors as text/html), one
//     request at a time per server, no "100 Continue", 404 "Nothing
//     matches the given URI", 405 "Specified method is invalid for this
//     resource", 431 over a 512-byte header section, 414 over a 512-byte URI.
//   - Content-Length is required in effect: without it, or with chunked
//     encoding, esp_http_server hands the handler content_len 0, so the seed
//     erases the slot and answers 500 "OTA end failed" (there is no 411).
//   - The upload handler erases the whole slot before reading (Timing.EraseRate),
//     reads 1024 bytes at a time, rejects a first byte other than 0xE9 with
//     500 "Write failed", a write past the slot with "Write failed", and an
//     image that does not verify (image.Validate against the device's chip
//     and slot size; a missing app description is not an error, as for
//     esp_ota_end) with "OTA end failed". While the running image is still
//     pending_verify, esp_ota_begin refuses: 500 "OTA begin failed".
//   - A failure mid-upload is answered while the client is still sending,
//     and the connection is closed at once: the unread data makes it an RST
//     right behind the answer, as on lwIP (Timing.ErrorCloseDelay delays the
//     close for lenient clients such as curl).
//   - The device's sockets have lwIP's 5760-byte receive window and 1440
//     MSS (Linux), so a client sees its writes stall during the erase.
//   - After the 200 the handler waits Timing.RebootDelayMin..Max (seeded)
//     and restarts the chip itself: nothing queued behind it is served.
//     While the device boots (Timing.BootTime) it is silent: its listeners
//     are held so connects time out (Linux; elsewhere they are refused), open
//     connections get nothing and are reset once it is back, the espota port
//     stays bound and deaf, and mDNS sends no goodbye (Withdraw); at boot it
//     probes and announces again. It then runs the new image, or the old one
//     per the image's Behaviour.
//   - espota devices erase sector by sector while writing (the Arduino
//     Updater), report image verification failures as "Could Not Activate
//     The Firmware", and reboot about 110 ms after their final OK. The
//     arduino-esp32 Updater buffers 4096 bytes and takes a first byte other
//     than 0xE9 for an encrypted image: "Decryption error". initArduino()
//     marks a new image valid before setup() unless Config.RollbackLater.
//   - ESP8266 devices have no rollback: a crashing image boot-loops and the
//     device stays down. Their factory image is a stand-in (image.Build
//     cannot make ESP8266 images); uploads are checked for the magic byte
//     and MD5 only.
//
// # Fleets
//
// StartFleet starts N devices on consecutive loopback addresses (from
// 127.0.0.2) on the real ports, named ots-sim-01 … (three digits past 99),
// advertised by one mDNS responder on the loopback interface when asked.
// Non-loopback addresses are refused unless explicitly allowed.
//
// # Events, faults, behaviours
//
// Every device reports typed Events (JSON with stable snake_case fields).
// Faults (ParseFault: drop@40%, stall@50%:10s, error@30%, slow:20KB/s,
// trickle:8B/s, no-return, power-loss@60%, refuse:5s, latency:5ms,
// no-reboot, early-answer@30%, lose-answer, status-error, no-connect-back,
// lose-ok, early-ok@30%, chatter@50%) are drawn from a per-device seeded
// source, so runs reproduce. Behaviours (healthy, crash-on-boot, unstable,
// no-network, unconfirmed, foreign-elf, crash-to-factory, crash-loop) are
// chosen by image version, ELF (elf:HEX) or BehaveUploaded and act on the
// boots after Start.
//
// # Shapes
//
// A device can tell less than the contract allows (Config.Omit,
// OmittableFields; the OTS /api/status has no uptime unless
// Config.APIUptime), run another build of a version (Config.BuildSeed), or
// have been updated before, with an older factory app (Config.FactoryVersion).
package sim
