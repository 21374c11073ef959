// Package form is the web-form upload family on sim/core: sketches with
// arduino-esp32's HTTPUpdateServer or esp8266/Arduino's
// ESP8266HTTPUpdateServer (personality httpupdateserver), and ESPEasy
// (personality espeasy). The chip decides the core: Config.Chip "esp8266"
// runs the esp8266/Arduino build, any other chip the arduino-esp32 one.
// The wire facts, with their sources, are in the project's research notes
// for issue 18 and docs/device-behaviour.md; nothing here comes from the
// client (upload/).
//
// What is mirrored, on the device's one web server (port 80 by default):
//
//   - GET /update: the library's form page (inputs name='firmware' and
//     name='filesystem'; ESPEasy on ESP32: firmware only), or a 401 Basic
//     challenge when the sketch set a user and password.
//   - POST /update, multipart: a part is a file only with filename=; the
//     field name "filesystem" writes the filesystem, any other the
//     firmware. Every answer is 200 text/html: "<META
//     http-equiv=\"refresh\" content=\"15;URL=/\">Update Success!
//     Rebooting..." then a restart 100 ms later (the socket closed first),
//     or "Update error: <Update's error>" (arduino-esp32 "…\r\n",
//     esp8266 "ERROR[n]: …\n") and no restart. Not authenticated: 401
//     Basic; on arduino-esp32 with the CSRF check a wrong Origin is 200
//     "Update error: Wrong origin received!" without credentials, 401 with.
//   - A non-multipart body too big for the heap (a raw firmware) is read
//     and never answered; the connection closes after the receive timeout.
//   - The "authenticated" flag is the library's member: it starts false and
//     is set by the last file part's start, so a POST without a file part
//     gets a 401 even on a device without credentials.
//   - ESP8266: OPTIONS /update answers 200 "y" with the CORS headers (core
//     ≥ 3.1.0), and the POST answers carry them too.
//   - ESPEasy: /update never asks for credentials; GET /json (never either)
//     tells System.Build, Git Build (the running image's version), Build
//     Time (derived from the image's bytes, so each build differs),
//     Binary Filename, Uptime and Uptime (ms); GET / asks for the admin
//     password (Config.Password) by Digest; on ESP32 a filesystem part is
//     a no-op answered with success and a restart.
package form
