// Package wled is WLED on sim/core (personality wled): the 0.15.x line
// from 0.15.2 on, and 16.x; Config.Version picks the line (default
// 16.0.1), Config.Chip "esp8266" the ESP8266 build. Written from WLED's
// source (wled/WLED tags v0.15.2 … v0.15.5, v16.0.0, HEAD 6d16dc2:
// wled00/wled_server.cpp, ota_update.cpp, wled_metadata.{h,cpp}, json.cpp,
// wled.cpp) and the project's research notes (uploaders.md §5), never from
// the client (upload/).
//
// What is mirrored, on the one web server (ESPAsyncWebServer, port 80):
//
//   - POST /update, multipart, any field name. At the file part's first
//     chunk, in this order: 16.x only, the subnet gate (otaSameSubnet, on
//     unless Config.OTAAnySubnet: a client outside Config.Subnet, default
//     the device's /24, is refused unless a settings PIN is set; with it
//     off, a client outside 10/8, 192.168/16, 172.16/12 and the device's
//     subnet is refused); the PIN gate (Config.SettingsPIN: a PIN nobody
//     entered); the OTA lock (Config.OTALock). Each refusal is 401, the
//     message page "Access Denied" with "Client is not on local subnet.",
//     "Please unlock settings using PIN code!" or "Please unlock OTA in
//     security settings!". Gates are never opened: the sim takes no PIN.
//   - Then Update.begin(Content-Length of the whole request); while an
//     update runs, 503 with an empty body (the running one carries on).
//   - The release check, unless the field skipValidation=1 came before the
//     file part (a field after it is not a param yet): once 512 bytes past
//     offset 256 (ESP32) or 0x1000 (ESP8266) have arrived, the chunk that
//     got there, with the chunks buffered since the offset, is searched for
//     the metadata (meta.go). 500 "Update failed!" with "This firmware file
//     is missing compatibility metadata.", "Firmware release name mismatch:
//     current='…', uploaded='…'." or (desc_version 2) "Cannot update from
//     this version: requires at least x.y.z, current='…'.", each followed by
//     " Enable 'Ignore firmware validation' to proceed anyway."; an image
//     that ends first: "Release check data never arrived?". From 0.15.5 a
//     "_V4" suffix of either release name is ignored; 0.15.2 to 0.15.4
//     refuse an empty release name without a message. 16.x on ESP8266
//     takes a gzipped image and checks the inflated head at the end.
//   - Update errors: 500 "Update failed!" with Update's error string.
//   - Success: 200 "Update successful!" "Rebooting now...", then the reset
//     450 ms later (WLED::reset()), and silence while the chip boots.
//   - The answers are msg.htm pages sent with a template processor: no
//     Content-Length, chunked to HTTP/1.1 clients, then the close.
//   - GET /update: 401 with the OTA lock, a PIN page with a PIN, else the
//     update form (hidden skipValidation before the file input "update").
//   - POST /updatebootloader: 16.x on ESP32 unless Config.NoBootloaderOTA;
//     the same gates; unsupported on ESP32-S3/-C3/-C6 builds.
//   - GET /json/info (and /json, /json/state, /json/si): ver and release
//     from the running image's metadata, vid the release's build code
//     (buildCode), brand "WLED", product "FOSS", arch, core, mac, ip,
//     uptime since the reset, name "WLED" …, no authentication.
//   - mDNS: _http._tcp and _wled._tcp on port 80, the latter with TXT
//     mac=<12 lowercase hex digits>.
//
// The images a device runs carry WLED's metadata (Image builds them; the
// factory image is one): the version a device tells after an update is
// the uploaded image's, read from its metadata, so an image says what it
// is. An image without metadata (sent with skipValidation) tells its app
// description's version and the device's release name.
package wled
