// Package rawhttp is the client of the raw HTTP POST family: one POST of
// the image as the request body (application/octet-stream,
// Content-Length, Bearer or Basic auth) to the device's OTA port, the way
// the seed and the OTS firmware take it with ESP-IDF's httpd. Transport
// implements upload.Transport and reports the family's upload.Traits (app
// images only). The wire facts, with their sources, are in
// docs/protocols/rawhttp.md.
package rawhttp
