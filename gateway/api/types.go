package api

import (
	"net/url"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway"
	"github.com/mulegate/mulegate/gateway/store"
)

// ErrorBody is every error response.
type ErrorBody struct {
	// Error says what is wrong, for people.
	Error string `json:"error"`
	// Reason is a snake_case word for programs: the BPv7 status report
	// reason when the node refused a bundle (depleted_storage,
	// lifetime_expired, …), otherwise the kind of request error
	// (bad_parameter, length_required, unauthorized, not_found, …).
	Reason string `json:"reason"`
	// Param names the offending query parameter, if one.
	Param string `json:"param,omitempty"`
}

// SendResult answers POST /v1/bundles once the bundle is durably stored.
type SendResult struct {
	ID          string `json:"id"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Length      uint64 `json:"payload_length"`
	// URL is the bundle's path on this API: GET it to follow its progress.
	URL string `json:"url"`
}

// Delivery is a bundle waiting at a local endpoint.
type Delivery struct {
	ID          string    `json:"id"`
	Endpoint    string    `json:"endpoint"`
	Source      string    `json:"source"`
	Destination string    `json:"destination"`
	ReportTo    string    `json:"report_to,omitempty"`
	Created     time.Time `json:"created,omitzero"`
	Received    time.Time `json:"received"`
	Expires     time.Time `json:"expires"`
	// AgeMS is the bundle's age when this listing was made: since its
	// creation, or from its bundle age block if its source had no clock.
	AgeMS    int64            `json:"age_ms"`
	Length   uint64           `json:"payload_length"`
	HopCount *bundle.HopCount `json:"hop_count,omitempty"`
	// AdminRecord marks a status report (RFC 9171 §6.1) rather than
	// application data.
	AdminRecord bool `json:"admin_record,omitempty"`
	Fragment    bool `json:"fragment,omitempty"`
	// Signature is what the node established about the sender's signature:
	// "valid:NAME (via)" when verified, "signed-here" for a bundle this node
	// signed, empty when unsigned or not verifiable here.
	Signature  string `json:"signature,omitempty"`
	PayloadURL string `json:"payload_url"`
	AckURL     string `json:"ack_url"`
}

// Deliveries answers GET /v1/deliveries.
type Deliveries struct {
	Endpoint   string     `json:"endpoint"`
	Deliveries []Delivery `json:"deliveries"`
}

// AckResult answers POST /v1/deliveries/{id}/ack.
type AckResult struct {
	ID       string `json:"id"`
	Endpoint string `json:"endpoint"`
}

// Endpoints answers GET and POST /v1/endpoints.
type Endpoints struct {
	// Node is this node's ID: its singleton endpoints are always
	// deliverable and need no registering.
	Node      string   `json:"node"`
	Endpoints []string `json:"endpoints"`
}

// Bundles answers GET /v1/bundles.
type Bundles struct {
	Bundles []gateway.BundleInfo `json:"bundles"`
}

// Peers answers GET /v1/peers.
type Peers struct {
	Peers []gateway.PeerStatus `json:"peers"`
}

// Ready answers /healthz and /readyz.
type Ready struct {
	Status string `json:"status"`
	Node   string `json:"node,omitempty"`
}

// BundlePath is a bundle's path on this API.
func BundlePath(id string) string { return "/v1/bundles/" + url.PathEscape(id) }

// PayloadPath is the path of a bundle's payload.
func PayloadPath(id string) string { return BundlePath(id) + "/payload" }

// AckPath is the path that acknowledges a delivery at endpoint.
func AckPath(id, endpoint string) string {
	return "/v1/deliveries/" + url.PathEscape(id) + "/ack?" + url.Values{"endpoint": {endpoint}}.Encode()
}

func deliveryOf(m store.Meta, endpoint bundle.EID, now time.Time) Delivery {
	b := m.Bundle
	id := m.ID.String()
	d := Delivery{
		ID: id, Endpoint: endpoint.String(), Source: b.Primary.Source.String(),
		Destination: b.Primary.Destination.String(), Received: m.ReceivedAt, Expires: m.ExpiresAt,
		AgeMS:  b.CurrentAge(m.ReceivedAt, now).Milliseconds(),
		Length: b.Payload.Length, AdminRecord: b.IsAdminRecord(), Fragment: b.Primary.IsFragment(),
		PayloadURL: PayloadPath(id), AckURL: AckPath(id, endpoint.String()),
	}
	if !b.Primary.ReportTo.IsNone() && b.Primary.ReportTo != b.Primary.Source {
		d.ReportTo = b.Primary.ReportTo.String()
	}
	if b.Primary.Creation.Time != 0 {
		d.Created = b.Primary.Creation.Time.Time()
	}
	if hc, ok, err := b.HopCount(); ok && err == nil {
		d.HopCount = &hc
	}
	return d
}
