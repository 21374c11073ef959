// Package arduino is what the Arduino web-uploader personalities (sim/form,
// sim/elegantota) share: the Arduino web servers' framing, not-found
// answers and authentication (web.go), their multipart parsers (form.go),
// the Update class of both cores over the device core's flash (update.go)
// and the optional GET /ota/status (status.go). It is no personality of its
// own. Written from the libraries' source as read for issue 18
// (research18.md in the project notes), never from the client (upload/).
//
// The servers:
//
//   - ESP8266WebServer (esp8266/Arduino 3.1.x): answers "HTTP/1.x", then
//     Content-Type, the handler's headers, Content-Length, Connection:
//     keep-alive with Keep-Alive: timeout=2000 (HTTP/1.1, unless a POST
//     said Connection: close); 404 text/html "Not found: <path>".
//   - WebServer (arduino-esp32 3.x): the same, always Connection: close.
//   - ESPAsyncWebServer (ESP32Async 3.x): Connection: close, the handler's
//     headers, Accept-Ranges: none, Content-Length, Content-Type (none for
//     an empty body); 404 text/plain "Not found"; "100 Continue" to an
//     Expect; routes match as a prefix too; requests are served at once.
//
// Both sync servers take Basic or Digest whatever they challenged with; a
// Digest answer must carry the nonce, opaque and realm of the server's last
// Digest challenge (one per server), and on arduino-esp32 the request's
// path as uri. The async server checks Digest answers with any nonce.
package arduino
