package rawhttp

// apiStatus decodes the OTS web app's GET /api/status.
type apiStatus struct {
	FirmwareVersion string `json:"firmwareVersion"`
	Mode            string `json:"mode"`
	IP              string `json:"ip"`
	SerialNumber    string `json:"serialNumber"`
	OwnerName       string `json:"ownerName"`
}
