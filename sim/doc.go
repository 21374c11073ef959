// Package sim simulates ESP32 (and ESP8266) devices that take firmware
// over the network the way the real firmware does, so that clients can be
// tested on loopback: curl, the seed's Python script, espota.py and
// ots-ota itself. It deliberately shares no code with package upload (a
// simulator built from the client's code would agree with its bugs); it
// reuses package image to build and verify images.
//
// # Packages
//
// sim is the assembly: it registers the personalities (registry.go),
// starts fleets (StartFleet) and gives the device core's API the names
// cmd/ and the client's tests use (api.go).
//
//   - sim/core: the device core. Flash slots and otadata, app states, boot
//     and reboot, rollback, behaviours, faults, events, sockets held
//     silent across resets, the esp_http_server look-alike, the mDNS
//     hookup; and the Firmware interface a personality implements.
//   - sim/rawhttp: the seed and the OTS firmware (personalities seed, ots):
//     the image as the raw body of POST /update on 3232, GET /ota/status,
//     the OTS web app on 80 (/api/status, POST /ota/upload).
//   - sim/espota: ArduinoOTA (personalities arduino, esp8266): the espota
//     wire server and the sketch around it.
//   - sim/form: the Arduino web form (personalities httpupdateserver,
//     espeasy): multipart POST /update on the sketch's web server.
//   - sim/elegantota: ElegantOTA v3 (personality elegantota; sync and async
//     builds): /ota/start, then /ota/upload.
//   - sim/esphome: ESPHome's native OTA (personalities esphome on ESP32,
//     TCP 3232, and esphome-esp8266, TCP 8266 with gzip): the device side
//     of its own TCP protocol on the core's plain-TCP server kind
//     (Server.Stream), _esphomelib._tcp whose project_version and
//     config_hash follow the image; its build settings are esphome.Options
//     in Config.Options.
//   - sim/wled: WLED 0.15.x (from 0.15.2) and 16.x (personality wled):
//     multipart POST /update behind the subnet, PIN and OTA-lock gates,
//     the release-metadata check, /json/info, _wled._tcp.
//   - sim/tasmota: Tasmota on ESP8266 and ESP32 (personality tasmota; the
//     ESP32 safeboot layout with Config.Safeboot): /up and /u2, /cm, the
//     Referer gate, translated pages, the upgrade by URL the device fetches
//     itself (the ESP8266 minimal two-step).
//   - sim/internal/arduino: what the web uploaders share (the Arduino web
//     servers, their multipart parsers, the Update class of both cores).
//   - sim/internal/tasmotafw: what sim/tasmota and sim/tasmotamqtt share
//     (the same firmware's minimal URL, version compare, hardware and
//     uptime words, the HTTP client of its upgrade by URL and its errors).
//   - sim/mdnsd: the mDNS responder that advertises fleets.
//
// A new device family is one package on sim/core, a Firmware per
// personality, and one line in registry.go.
//
// # Devices
//
// A Device (Start) has three app slots (factory, ota_0, ota_1; 2 MiB by
// default; the Arduino personality has arduino-esp32's default.csv: app0
// and app1 of 1.25 MiB and a spiffs partition), the two otadata entries and
// ESP-IDF's app states and rollback rules. docs/device-behaviour.md in the
// repository lists the firmware facts mirrored, with their sources; each
// package's documentation says which it mirrors. A device runs one of nine
// personalities: Seed (HTTP POST /update on 3232, Bearer auth), OTS (POST
// /update on 3232 without auth, web app on 80 with /api/status and
// /ota/upload), Arduino (espota on UDP 3232, MD5 or PBKDF2 auth), ESP8266
// (espota on UDP 8266) (device-contract.md §1), and the web uploaders on
// their web server, ESP32 or (Config.Chip "esp8266") ESP8266:
// HTTPUpdateServer, ESPEasy, ElegantOTA, WLED and Tasmota. Config.Extensions adds the TXT
// keys and GET /ota/status that ots-ota documents (contract §4; the web
// uploaders: GET /ota/status only); without it a device shows exactly what
// the real firmware shows.
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
// boots after Start. Config.OnRequest sees every HTTP request any
// personality's servers receive, as it came (HTTPRequest).
//
// # Shapes
//
// A device can tell less than the contract allows (Config.Omit,
// OmittableFields; the OTS /api/status has no uptime unless
// Config.APIUptime), run another build of a version (Config.BuildSeed), or
// have been updated before, with an older factory app (Config.FactoryVersion).
package sim
