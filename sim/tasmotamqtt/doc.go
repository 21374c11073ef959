// Package tasmotamqtt is a fleet of simulated Tasmota devices that pull
// their updates (personality tasmota-mqtt): each connects to the user's
// MQTT broker as the firmware does, takes OtaUrl / Upgrade / Backlog
// commands there, fetches the image over HTTP itself at flash speed, and
// tells what it runs in LWT, INFO1–3, UPGRADE and Status. Written from
// Tasmota's source as the project's notes report it (tasmota-mqtt facts,
// docs/protocols/tasmota-mqtt.md), never from the client (upload/,
// rollout/).
//
// Devices have no addresses of their own: one process holds hundreds,
// each with one broker connection. Downloads in flight share their bytes
// by flash sector across the fleet, and what an image is gets worked out
// once per image: a device keeps only what its image told.
//
// What the firmware does, and the sim with it:
//   - CONNECT with the will tele/<t>/LWT "Offline" (QoS 1, retained), a
//     clean session; then LWT "Online" (retained), an empty cmnd/<t>/POWER,
//     the subscriptions (cmnd/<t>/#, the group topic, the fallback topic),
//     and on a boot's first connection only INFO1, INFO2, INFO3.
//   - Commands on any of those topics, retained ones too (the firmware has
//     no check: a retained Upgrade runs after every reconnect). Replies on
//     stat/<t>/RESULT (SetOption4: stat/<t>/<COMMAND>); Status on
//     stat/<t>/STATUS, STATUS1 … (Status 0: one message per section;
//     Status0: one STATUS0).
//   - Upgrade: the once-a-second state machine of support_tasmota.ino, up
//     to four tries, the ESP8266's -minimal and .gz names, then one UPGRADE
//     "Successful. Restarting" or "Failed <reason>".
//   - A restart (after an upgrade, or Restart 1) is EspRestart: WifiShutdown
//     sends a clean DISCONNECT, so the broker does NOT publish the will; the
//     retained LWT stays "Online" until the next boot says so again. Only a
//     lost link (a power cut, an expired keepalive, the broker-drop fault,
//     Fleet.Close) makes the broker publish "Offline".
package tasmotamqtt
