// Package core is the simulated device without its firmware: the chip, its
// SDK and its flash. A personality (a Firmware, registered with Register)
// says what runs on it; sim/rawhttp, sim/espota, sim/form,
// sim/elegantota, sim/esphome, sim/wled and sim/tasmota are the families
// so far, and sim assembles them. A family's own settings travel in
// Config.Options.
//
// What the core mirrors (docs/device-behaviour.md lists the sources):
//
//   - Flash (flash.go): three app slots, the two otadata entries and
//     ESP-IDF's app states and rollback rules (research/esp-image.md §4.3);
//     the platform decides the layout (ESP-IDF: factory, ota_0, ota_1;
//     arduino-esp32's default.csv: app0, app1, spiffs; ESP8266: no
//     rollback, so a crashing image boot-loops and the device stays down).
//   - Upload sessions (upload.go): esp_ota_begin erases the whole slot
//     before the first byte (Timing.EraseRate), the Arduino Updater erases
//     sector by sector; a first byte other than 0xE9 (or gzip on ESP8266)
//     fails, a write past the slot fails, and esp_ota_end validates the image
//     against the device's chip and slot size (image.Validate; a missing app
//     description is not an error). While the running image is
//     pending_verify, esp_ota_begin refuses.
//   - Resets (device.go, net.go): while the device boots (Timing.BootTime)
//     it is silent: its listeners are held so connects time out (Linux;
//     elsewhere they are refused), open connections get nothing and are reset
//     once it is back, UDP ports stay bound and deaf, and mDNS sends no
//     goodbye; at boot it probes and announces again. It then runs the new
//     image, or the old one per the image's Behaviour. initArduino() marks a
//     new arduino-esp32 image valid before setup() unless Config.RollbackLater.
//   - The network: the device's sockets have lwIP's 5760-byte receive window
//     and 1440 MSS (Linux), so a client sees its writes stall during the erase.
//   - HTTP (httpd.go): a small ESP-IDF httpd look-alike, not net/http: exact
//     response bytes, one request at a time per server, no "100 Continue",
//     404 "Nothing matches the given URI", 405, 431 over a 512-byte header
//     section, 414 over a 512-byte URI; personalities give it routes. A
//     server with Server.NotFound is an Arduino web server instead: lenient
//     parsing, its own not-found answer, answers framed by the personality
//     (Request.SendRaw), optionally concurrent and with "100 Continue".
//     Every request it receives goes to Config.OnRequest first (requests.go).
//   - Plain TCP (stream.go, Server.Stream): a protocol of the firmware's
//     own, one connection at a time; the next client waits in the listen
//     backlog, and a reset leaves the open connection unanswered.
//   - Faults, behaviours and events (faults.go, behaviour.go, events.go),
//     drawn from a per-device seeded source so runs reproduce; what a device
//     tells less of (shapes.go, Config.Omit).
//
// A Firmware reaches its device only through the Env it is handed: the
// settings, the running image, the armed faults, events, upload sessions
// and resets.
package core
