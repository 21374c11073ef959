package core

import (
	"encoding/json"
	"testing"
	"time"
)

func TestEventJSON(t *testing.T) {
	e := Event{Event: EventUploadFinished, Time: time.Unix(0, 0).UTC(), Device: "ots-sim-01", Addr: "127.0.0.2:3232",
		Protocol: "http", Remote: "127.0.0.1:5000", Version: "1.0.1", Status: 200, Text: "OTA update successful, rebooting...",
		Size: 1000, Bytes: 1000, Slot: "ota_0"}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event":"upload_finished","time":"1970-01-01T00:00:00Z","device":"ots-sim-01","addr":"127.0.0.2:3232",` +
		`"protocol":"http","remote":"127.0.0.1:5000","version":"1.0.1","slot":"ota_0","size":1000,"bytes":1000,` +
		`"status":200,"text":"OTA update successful, rebooting..."}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
