// Package tasmota is Tasmota on sim/core (personality tasmota): the
// ESP8266 build (Config.Chip "esp8266"; the minimal two-step upgrade) and
// the ESP32 build, with Config.Safeboot on the safeboot layout. Written
// from arendst/Tasmota's source (tasmota_xdrv_driver/xdrv_01_9_webserver.ino,
// tasmota_support/support_tasmota.ino and support_command.ino, language/
// en_GB.h and de_DE.h, read through the code index for issue 19) and the
// project's research notes (uploaders.md §6), never from the client
// (upload/).
//
// What is mirrored, on the one sync web server (port 80, one client at a
// time):
//
//   - The privileged pages (/up, /u1, /u2's answer, /u4, /rs, /cm) check
//     the web password first (Config.Password, user admin: a 401 Basic
//     challenge, realm "Login Required"; /cm answers 401 JSON
//     {"WARNING":"Need user=<username>&password=<password>"} instead, and
//     also takes user= and password= arguments), then the Referer: unless
//     SetOption128 is on, the uppercased Referer must hold the host name
//     (Config.Name) or the IPv4 address first at index 7 ("http://…");
//     otherwise the handler sends nothing: the connection stays open until
//     the client closes it or HTTP_MAX_CLOSE_WAIT (2 s, scaled like the
//     firmware's own waits) passes, then closes.
//   - GET /up: the upgrade page; /u2 takes firmware from then on (GET /rs
//     switches it to a settings restore; a fresh boot takes firmware).
//   - POST /u2?fsz=N, multipart, field name unused: the upload runs
//     through HandleUploadLoop while the server parses the body, before
//     and whatever the checks of the answer decide (an image refused for
//     its Referer is the boot image all the same, and nothing restarts).
//     Errors: 1 no filename, 3 first byte neither 0xE9 nor 0x1F, 4 fsz
//     above the free sketch space (first byte 0xE9), 2 Update.begin or a
//     write failed (the app of the safeboot layout cannot begin: its only
//     OTA partition runs), 6 Update.end failed, 7 the client went away;
//     a settings restore: 9 over 4096 bytes, else 8. The answer is always
//     200 HTML: "Upload" and "Successful" ("Device will restart in a few
//     seconds"), or "Upload Failed" and the error's text, translated with
//     Config.Language "de"; an error stays until an answer showed it.
//     Success restarts two of the firmware's seconds later.
//   - GET /u4?u4=fct|ota[&api=] (ESP32): restart into safeboot ("false"),
//     or "true" (safeboot layout, nothing to do) / "none".
//   - /cm?cmnd=…: Status (0 all blocks, 1 StatusPRM with OtaUrl, Uptime,
//     BootCount, RestartReason; 2 StatusFWR with Version
//     "<version>(<image>)", BuildDateTime, Hardware; 5 StatusNET; 11
//     StatusSTS with UptimeSec …), OtaUrl (cut to 100 characters), Upgrade
//     1, Backlog (commands run after the answer, 200 ms apart; the answer
//     is {}), SetOption128, Restart 1. Every answer carries Server:
//     Tasmota/<version> (<hardware>), chunked to HTTP/1.1 clients.
//   - Upgrade by URL (ota.go): the device fetches OtaUrl itself with a Go
//     HTTP client, from loopback only, sending x-ESP8266-STA-MAC (or
//     x-ESP32-STA-MAC) like the cores; the ESP8266 minimal two-step; the
//     ESP32 safeboot restart.
//   - The fault status-during-upgrade: a Status command while an upgrade
//     runs corrupts it (the upgrade fails, the old image stays).
//
// What a device runs: the image name (the "(tasmota)" of Version) and
// version come from the running image: its app description's project and
// version on ESP32, the string the image package writes into an ESP8266
// sketch (Image builds both). Images named "minimal" and "safeboot" act
// as those builds. On the safeboot layout the sim keeps its arduino-esp32
// flash (app0, app1) and says which boot is safeboot itself: a boot into
// safeboot runs the app's image with the safeboot's behaviour.
//
// On ESP8266, Config.SlotSize stands for the sketch area (from the
// sketch's start to the filesystem), which the running sketch and the new
// one share: the free sketch space is what the running one leaves.
package tasmota
