// Package rawhttp is the raw HTTP device family on sim/core: the seed
// firmware and the OTS firmware (personalities seed and ots), which take
// the image as the raw body of POST /update on TCP 3232
// (device-contract.md §1–§2). The wire facts, with their sources, are in
// docs/protocols/rawhttp.md.
//
// What is mirrored:
//
//   - Seed: POST /update with Bearer auth (401 "Authentication required",
//     403 "Invalid credentials"; an Authorization value over 127 bytes is
//     truncated, so missing), mDNS _ota._tcp and _http._tcp; the version is
//     visible only on the serial log. OTS: POST /update without auth, mDNS
//     _arduino._tcp, and the web app on 80: GET /api/status (camelCase, no
//     uptime as shipped) and POST /ota/upload (400 "Invalid firmware size"
//     outside 1 byte … 3 MB). Config.Extensions adds GET /ota/status and the
//     _ota._tcp TXT keys of contract §4.
//   - Content-Length is required in effect: without it, or with chunked
//     encoding, esp_http_server hands the handler content_len 0, so the
//     firmware erases the slot and answers 500 "OTA end failed" (there is no
//     411).
//   - The upload handler erases the whole slot before reading, reads 1024
//     bytes at a time, answers 500 "Write failed" for a first byte other
//     than 0xE9 or a write past the slot, "OTA end failed" for an image that
//     does not verify, and "OTA begin failed" while the running image is
//     still pending_verify.
//   - A failure mid-upload is answered while the client is still sending,
//     and the connection is closed at once: the unread data makes it an RST
//     right behind the answer, as on lwIP (Timing.ErrorCloseDelay delays the
//     close for lenient clients such as curl).
//   - After the 200 the handler waits Timing.RebootDelayMin..Max (seeded)
//     and restarts the chip itself: nothing queued behind it is served.
package rawhttp
