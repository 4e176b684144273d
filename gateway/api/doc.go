// Package api is mulegate's local application API: HTTP on loopback (or a
// Unix socket), bearer-token authentication, JSON for everything except
// payloads, which are streamed both ways. It is the application door of the
// node: what an application sends here goes through the same pipeline as a
// bundle from a peer (gateway.Node.Send), and what is delivered to an
// endpoint on this node is read here (Node.Deliveries, OpenPayload, Ack).
//
// The routes (openapi.yaml in this directory describes each in full):
//
//	GET  /healthz                      process alive (no token needed)
//	GET  /readyz                       node started and store open
//	GET  /metrics                      Prometheus metrics of the node and the API
//	GET  /v1/status                    node status
//	GET  /v1/peers                     peers and contacts
//	GET  /v1/bundles                   held bundles, per-destination progress
//	POST /v1/bundles                   send: the body is the payload
//	GET  /v1/bundles/{id}              one held bundle
//	GET  /v1/bundles/{id}/payload      its payload, streamed (Range supported)
//	GET  /v1/endpoints                 registered endpoints
//	POST /v1/endpoints                 register an endpoint (groups: dtn://~name/…)
//	GET  /v1/deliveries                bundles waiting at an endpoint
//	GET  /v1/deliveries/stream         the same, followed as Server-Sent Events
//	POST /v1/deliveries/{id}/ack       the application has taken a bundle
//
// Bundle IDs (dtn://node/|TIME.SEQ) go in the path escaped
// (url.PathEscape); endpoints go in the query. Every error is JSON:
// {"error": "what is wrong, for people", "reason": "a snake_case word",
// "param": "the offending parameter, if one"}. When the node refuses a
// bundle, reason is the BPv7 status report reason (bundle.ReasonOf), the
// same word the node's log and metrics use.
//
// The token is made on first run and kept in DATA_DIR/api.token (mode
// 0600); clients send it as "Authorization: Bearer TOKEN". Client, in this
// package, is the Go client the mulegate CLI uses.
package api
