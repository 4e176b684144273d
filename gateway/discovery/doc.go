// Package discovery finds mulegate nodes on the same LAN without
// configuration, by UDP multicast beacons: a mule that walks into a village
// Wi-Fi hears the nodes there, and they hear it.
//
// Every node sends a small beacon to a multicast group (by default
// 239.255.45.56:4558) every interval (by default 5 s, jittered by ±25% so
// that nodes started together drift apart), announcing its node ID and the
// convergence layers it listens on. A node that hears a beacon from another
// node reports it to the caller through Options.OnPeer, and the caller dials
// it. Discovery is on by default; with Options.Disabled (configuration:
// discovery.enabled: false, or `mulegate run --discovery=false`) Run opens no
// socket at all.
//
// # Where to dial
//
// A node listens on the wildcard address ([::]:4556), so it cannot know which
// of its addresses a neighbour can reach, and a beacon carries ports only. The
// address to dial is the beacon's source IP address with the announced port.
// An IPv6 link-local source address gets the zone of the interface the beacon
// came in on ("[fe80::1%wlan0]:4556"), without which it could not be dialled.
//
// # When OnPeer is called
//
// Not for every beacon. A peer is reported when it is first heard; when it is
// heard again after being silent for three beacon intervals (the longer of the
// interval it announces, capped at 10 minutes, and this node's); when its
// boot nonce changes (it restarted, so any session with it is gone); or when
// it announces an address not heard within that window (a new DHCP lease, a
// second interface). A restart or a new address is reported at most once per
// interval for one peer, and reports across all peers are limited to 10 a
// second (burst 32), so a flood of forged beacons cannot start a storm of
// dials. A report that is held back is not recorded, so a later beacon makes
// it. Both nodes of a pair hear each other and both are told; the caller
// should not dial a node it already has a session with.
//
// A node ignores its own beacons (those carrying its node ID), which come
// back to it through multicast loopback.
//
// # Address family and interfaces
//
// The group's address decides the family: an IPv4 group (239.0.0.0/8 is the
// administratively scoped range) or an IPv6 group, which should be of
// link-local scope (ff02::/16, such as [ff02::4d47]:4558). One Discovery
// speaks one family; to speak both, run two with two groups.
//
// Unless Options.Interface names one interface, the group is joined and
// beacons are sent on every interface that is up and multicast-capable, with
// the interfaces rescanned every interval, so one that comes up later is used
// from then on. A beacon is sent on an interface only if it has an address of
// the group's family. The host's loopback interface usually lacks the
// multicast flag and is then not used.
//
// The socket is bound to the wildcard address and the group's port with
// address reuse, so several nodes on one host can share the port. Multicast
// loopback is on, so they hear one another. The TTL (IPv4) or hop limit
// (IPv6) is 1: beacons never leave the link. Only datagrams sent to the group
// (and, with Options.Interface, arriving on that interface) are read, where
// the system can tell.
//
// # Beacon format, version 1
//
// A beacon is one UDP datagram holding one CBOR map (RFC 8949) with unsigned
// integer keys, encoded deterministically (core deterministic encoding):
//
//	beacon = {
//	  0: "mulegate",      ; magic, text
//	  1: 1,               ; version, uint
//	  2: tstr,            ; node ID, "dtn://mule1/" or "ipn:12.0", at most 255 bytes
//	  3: uint,            ; boot: random non-zero nonce chosen when the sender starts
//	  4: uint,            ; seq: counts the sender's beacons within one boot, from 0
//	  5: uint,            ; interval: the sender's beacon interval in ms, 1 to 86400000
//	  6: [+ service],     ; 1 to 8 services
//	}
//	service = [protocol: tstr, port: uint]
//	          ; protocol: 1 to 16 of a-z 0-9 '-': "quic", "tcpcl", "mtcp", ...
//	          ; port: 1 to 65535
//
// A typical beacon is about 60 bytes. A receiver drops, without reading it, a
// datagram over MaxBeaconSize (512 bytes); every beacon that obeys the limits
// above fits. It then drops anything that is not well-formed CBOR, has
// indefinite lengths, tags, duplicate keys or invalid UTF-8, has no magic or
// an unknown version, lacks a required key (3 and 4 default to 0), or breaks
// a limit above, including a node ID that is not a node ID
// (dtn://node/service). Keys it does not know are skipped, so fields can be
// added without a new version as long as old receivers may ignore them; a
// change that they must not ignore takes a new version, which they drop.
// Duplicate services are merged. New convergence layers need no format
// change: they are more entries in the services list, and a receiver reports
// them all and leaves the choice to the caller. Nothing is allocated from a
// length in a datagram beyond the datagram itself.
//
// # Security
//
// Beacons are not authenticated: anyone on the LAN can send one claiming any
// node ID. They are hints of where to dial, nothing more. The convergence
// layer authenticates the peer: the caller dials expecting the announced node
// ID, and the QUIC handshake (mutual TLS with the group's CA) fails if the
// certificate disagrees. A forged beacon can at worst cost a failed dial,
// which the rate limits above bound. Beacons reveal a node's ID and ports to
// the LAN; a node that must stay quiet turns discovery off.
package discovery
