// Package esphomepull is a fleet of simulated ESPHome nodes that pull their
// updates (personality esphome-pull): nodes built with `update: platform:
// http_request` and MQTT. Each polls a manifest at a URL fixed when it was
// built, tells what it found in its update entity's state, installs when
// told INSTALL over MQTT, fetches the image over HTTP itself at flash
// speed, checks its MD5 against the manifest's, reboots and tells its new
// version. Written from ESPHome's source as the project's notes report it
// (docs/protocols/esphome-pull.md), never from the client (upload/,
// rollout/).
//
// Nodes have no addresses of their own: one process holds thousands, each
// with one broker connection and one goroutine of its own besides the MQTT
// client's. Every node makes its own GET for the manifest and the image,
// so a file server sees the load of a real fleet; the image's bytes are
// held once per URL across the fleet (Fleet's image store), not per node.
//
// What the firmware does, and the sim with it:
//   - CONNECT with the will <prefix>/status "offline" (retained); then the
//     birth <prefix>/status "online" (retained), the subscription to
//     <prefix>/update/<id>/command, and the entity's state
//     <prefix>/update/<id>/state (retained) on every connection. Before the
//     first check after a boot the state's versions are "": update_info
//     is empty until then.
//   - The check (PollingComponent, every update_interval; the first one
//     soon after boot): GET the manifest; take the build whose chipFamily
//     is the node's; resolve ota.path (a path holding "http" anywhere is
//     used as is; one starting with "/" is joined to the manifest URL's
//     scheme and host; any other is relative to the manifest's folder);
//     latest_version = the manifest's version; current_version = the
//     node's project version; AVAILABLE when they differ (a string
//     compare: a downgrade too), else NO_UPDATE; publish the state. A
//     failed check publishes nothing.
//   - INSTALL on the command topic acts only when the state is AVAILABLE;
//     otherwise nothing. The state is published when the install starts,
//     about once a second while it downloads (the same JSON: the state
//     tells no progress), and again when it fails (back to AVAILABLE).
//   - Success is a clean reboot: "offline" published (the shutdown
//     message), DISCONNECT, then after the boot time a new connection:
//     "online", the state with "" versions, and after the first check the
//     new installed_version.
package esphomepull
