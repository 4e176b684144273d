// Package gateway is the mulegate node: it wires the store, the convergence
// layers, the router and the local endpoints together, and this is the only
// place where they are wired.
//
// Every bundle enters through one of three doors — the application API
// (Node.Send), a convergence-layer session with a peer (the node is the
// layers' convergence.Sink), or an adapter's inbound fetch — and passes the
// same pipeline:
//
//  1. validate (the bundle package's rules, unknown-block flags);
//  2. apply limits (policy.Limits: size, lifetime, hops, clock skew) and
//     refuse bundles already known to be delivered;
//  3. store durably (gateway/store); only then is the door told "accepted";
//  4. route: a bundle for this node goes to a local endpoint or, through a
//     configured route, to an adapter; any other bundle is carried for peers;
//  5. queue: a progress record per destination in the store.
//
// While a contact with a peer lasts, the two nodes exchange summary vectors
// (gateway/control) and each sends what the other lacks, as the routing
// strategy (gateway/routing) allows. A peer's summary is also its
// acknowledgement. When a bundle reaches its destination node, that node
// signs a delivery notice; carriers that learn of it, and can verify it,
// delete their copies.
package gateway
