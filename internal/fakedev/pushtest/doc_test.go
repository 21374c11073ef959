// Package pushtest runs push's machinery (upload.Run with the options
// cmd/push.go builds, on short timings) against the independent fake devices
// of package fakedev. Each test is one bullet of issue 13's "Why": a device
// shape on which push lied, hung or resent before verifying. The tests
// assert the outcome the table calls correct.
//
// It holds test files only, so the fakes themselves stay free of the
// module's packages.
package pushtest
