// Package fakedev runs fake OTA devices on loopback for tests: HTTP devices
// (POST /update, GET /ota/status, /api/status on a second port), ArduinoOTA
// devices (espota over UDP and a TCP connect-back) and the Arduino web
// uploaders (StartWeb: arduino-esp32's HTTPUpdateServer,
// ESP8266HTTPUpdateServer, ESPEasy and ElegantOTA v3, sync and async),
// WLED (StartWLED) and Tasmota (StartTasmota, which fetches an image by
// URL itself, from loopback only), and a Tasmota that pulls its image when
// told over MQTT (StartTasmotaMQTT, from the Tasmota MQTT facts and the
// MQTT 3.1.1 specification, with a client of its own), and ESPHome nodes
// that poll an update manifest and install on MQTT INSTALL
// (StartESPHomePull, from the ESPHome http_request update facts).
//
// It exists to test push against devices written independently of the
// client and of the simulator. It is written only from the device contract
// (../shared/device-contract.md), docs/firmware.md, the espota research
// notes and, for the web uploaders, the notes research18.md and
// research/uploaders.md, and it shares no code with sim/, upload/, devinfo/, image/ or
// auth/: it imports the standard library alone (a test checks that with
// go list -deps). A fake that reused the client's parsers or the
// simulator's device core would agree with their bugs.
//
// Behaviours are data: an HTTPConfig or EspotaConfig describes what the
// device tells (each status field may be omitted), how it takes an upload
// (erase stall, write speed, lost or early answers) and what it runs after
// the upload (installs and keeps, never restarts, rolls back, falls to a
// third image, crash-loops, stays pending then goes back, runs a foreign
// build, never comes back). Every device counts the uploads it received.
//
// A rebooting device is silent, not refusing (contract §5): on Linux its
// listeners stop accepting, shrink their backlog to nothing and fill it, so
// new connects time out as they do against a rebooting ESP32, and requests
// already queued go unanswered. Elsewhere the listeners only stop
// accepting: connects then succeed and hang instead of timing out.
//
// Like lwIP (CONFIG_LWIP_TCP_WND_DEFAULT 5760) every listener and
// connect-back socket asks for a receive buffer of 5760 bytes.
package fakedev
