package tasmota

// The texts of the pages and the HTTP API, per build language: en_GB (the
// default build) and de_DE, as arendst/Tasmota tasmota/language/en_GB.h and
// de_DE.h define them (de_DE as of "Updated until v10.0.0.1", read for
// issue 19). JSON keys and the JSON words of commands (D_JSON_*) are not
// translated: they live in i18n.h.
type lang struct {
	html                                   string // D_HTML_LANGUAGE
	upload, failed, successful             string // D_UPLOAD, D_FAILED, D_SUCCESSFUL
	information, firmwareUpgrade           string // D_INFORMATION, D_FIRMWARE_UPGRADE
	willRestart                            string // D_DEVICE_WILL_RESTART
	uploadErrors                           [9]string
	uploadErrorCode                        string // D_UPLOAD_ERROR_CODE
	needUserPassword                       string // D_NEED_USER_AND_PASSWORD
	enterCommand                           string // D_ENTER_COMMAND
	fileNotFound                           string // D_FILE_NOT_FOUND
	upgradeStarted                         string // D_UPGRADE_STARTED
	startUpgrade, upgradeByFile, otaURLTxt string // D_START_UPGRADE, D_UPGRADE_BY_FILE_UPLOAD, D_OTA_URL
}

var langs = map[string]lang{
	"en": {
		html: "en", upload: "Upload", failed: "Failed", successful: "Successful",
		information: "Information", firmwareUpgrade: "Firmware Upgrade",
		willRestart: "Device will restart in a few seconds",
		uploadErrors: [9]string{"No file selected", "Not enough space", "Magic byte is not 0xE9",
			"Program flash size is larger than real flash size", "Upload buffer miscompare",
			"Upload failed. Enable logging 3", "Upload aborted", "File invalid", "File too large"},
		uploadErrorCode:  "Upload error code",
		needUserPassword: "Need user=<username>&password=<password>",
		enterCommand:     "Enter command",
		fileNotFound:     "File Not Found",
		upgradeStarted:   "Upgrade started",
		startUpgrade:     "Start upgrade", upgradeByFile: "Upgrade by file upload", otaURLTxt: "OTA Url",
	},
	"de": {
		html: "de", upload: "Upload", failed: "fehlgeschlagen", successful: "erfolgreich",
		information: "Informationen", firmwareUpgrade: "Firmware Update",
		willRestart: "Gerät wird jetzt neu gestartet",
		uploadErrors: [9]string{"Keine Datei ausgewählt", "Ungenügend Speicherplatz", "Falsche Dateisignatur",
			"Datei überschreitet vorhdn. Flashspeicher", "Upload Buffer Vergleich weicht ab",
			"Upload fehlgeschlagen. Aktiviere logging 3", "Upload abgebrochen", "Datei ungültig", "Datei zu groß"},
		uploadErrorCode:  "Upload Fehler Nummer",
		needUserPassword: "Benötige user=<Benutzername>&password=<Passwort>",
		enterCommand:     "Befehl eingeben",
		fileNotFound:     "Datei nicht gefunden",
		upgradeStarted:   "Update gestartet",
		startUpgrade:     "Update starten", upgradeByFile: "Update Datei hochladen", otaURLTxt: "OTA-URL",
	},
}

// uploadError is the text of upload error n (kUploadErrors, 1-based), or
// "<code text> n" past the table, as HandleUploadDone writes it.
func (l lang) uploadError(n int) string {
	if n >= 1 && n <= len(l.uploadErrors) {
		return l.uploadErrors[n-1]
	}
	return l.uploadErrorCode + " " + itoa(n)
}
