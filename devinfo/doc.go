// Package devinfo tells what an ESP32 device runs, read-only, and where each
// fact came from (device-contract.md §4).
//
// Sources, in the order a client must degrade through them:
//
//  1. GET /ota/status on the OTA port — the ots-ota extension JSON
//     (project, version, chip, running/boot slot, app state, uptime…);
//  2. GET /api/status on the web port (80 by default) — the OTS firmware's
//     web app, which tells firmwareVersion and uptime;
//  3. the mDNS TXT record of the device's _ota._tcp or _arduino._tcp
//     service (version, project, chip, board, auth, auth_upload), which the
//     caller passes in Target.TXT;
//  4. nothing: the version is "not observable", with a one-line reason.
//
// The protocol is probed per contract §1: a TCP connect to the OTA port
// that succeeds means HTTP; one that is refused means espota (ArduinoOTA
// listens on UDP only).
//
// Nothing here changes a device: the package only opens TCP connections and
// sends GET requests. It never POSTs (on the OTS firmware, which checks no
// auth, a POST to /update starts erasing a 2 MiB slot) and never sends an
// espota invitation (which begins an update session).
package devinfo
