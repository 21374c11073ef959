// Package elegantota is ElegantOTA v3 (3.0.0 … 3.1.7) on sim/core
// (personality elegantota): its Demo sketch (sync WebServer or
// ESP8266WebServer) or, with Config.Async, its AsyncDemo sketch
// (ESPAsyncWebServer, ELEGANTOTA_USE_ASYNC_WEBSERVER=1). Config.Chip
// "esp8266" runs the esp8266/Arduino build. Written from the library's
// source as read for issue 18 (the project's research notes), never from
// the client (upload/).
//
// What is mirrored, on the sketch's one web server (port 80 by default):
//
//   - GET /update: the page, gzip-compressed, with Content-Encoding: gzip
//     whatever the request accepts; its title is "ElegantOTA Lite" (the
//     sim's own small page, not the library's). Async: /update/… answers
//     too (prefix routes), so /update/identity is the page.
//   - GET /ota/start?mode=fr|fs&hash=MD5: begins the update (mode=fs the
//     filesystem, anything else the firmware). A hash not 32 characters
//     long is 400 text/plain "MD5 parameter invalid"; the hash is then
//     dropped (begin() clears it), so nothing is ever checked against it.
//     200 "OK", or 400 with the Update error and "\n" (arduino-esp32
//     "…\r\n\n", esp8266 "ERROR[n]: …\n\n"). A second /ota/start while an
//     update runs answers 200 "OK" and changes nothing (released cores):
//     the old stream carries on at its old offset.
//   - POST /ota/upload, multipart, field name and filename ignored: 200
//     text/plain "OK", or 400 with the Update error text; sync answers add
//     Connection: close, async ones Access-Control-Allow-Origin: *. Without
//     a /ota/start nothing is begun, nothing written, and the answer is 200
//     "OK" all the same (then a restart into the old image); after an
//     earlier failure it is 400 with that failure's text. A connection
//     broken mid-upload leaves the update begun. Async: a write failing
//     mid-upload answers 400 with the previous (often empty) error text.
//   - Auth (Config.Username and Password both set): every route; sync
//     servers challenge Basic, async Digest (either answer is taken). A
//     sync upload without credentials still feeds a begun update.
//   - After a 200 from /ota/upload the sketch restarts 2 s later, from its
//     loop(): Config.NoLoop is a sketch without ElegantOTA.loop(), which
//     never restarts.
//   - GET / is the Demo's "Hi! This is ElegantOTA Demo." (AsyncDemo:
//     "… AsyncDemo."); no mDNS (the demos advertise nothing).
package elegantota
