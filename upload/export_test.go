package upload

// What the external tests (package upload_test, which import the
// transport packages) share with the internal ones.
var (
	AsDeviceError = asDeviceError
	SimFirmware   = testFirmware
	SimOptions    = simOptions
)
