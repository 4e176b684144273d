package gateway

import (
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/store"
)

// blockSprayCopies is a private-use extension block (type 193) that carries
// how many spray-and-wait copies the receiving node is responsible for. Its
// flags ask other implementations to discard it, so they carry the bundle
// unharmed.
const blockSprayCopies bundle.BlockType = 193

func sprayCopies(b *bundle.Bundle) (uint64, bool) {
	blk := b.Block(blockSprayCopies)
	if blk == nil {
		return 0, false
	}
	var n uint64
	if err := cbor.Unmarshal(blk.Data, &n); err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

func setSprayCopies(b *bundle.Bundle, n uint64) {
	data, _ := cbor.Marshal(n)
	if blk := b.Block(blockSprayCopies); blk != nil {
		blk.Data = data
		return
	}
	b.Blocks = append(b.Blocks, bundle.Block{Type: blockSprayCopies, Number: nextNumber(b), Flags: bundle.BlockRemoveIfUnproc, CRCType: bundle.CRC32C, Data: data})
}

func nextNumber(b *bundle.Bundle) uint64 {
	n := uint64(1)
	for _, blk := range b.Blocks {
		n = max(n, blk.Number)
	}
	return n + 1
}

// prepareForward returns the copy of a stored bundle that goes to the next
// hop, with its extension blocks brought up to date (RFC 9171 §4.4): this
// node as the previous node, one more hop, and the time it spent here added
// to its age.
func (n *Node) prepareForward(stored *bundle.Bundle, receivedAt time.Time, peerCopies uint64) *bundle.Bundle {
	b := stored.Clone()
	_ = b.SetPreviousNode(n.id)
	if hc, ok, err := b.HopCount(); ok && err == nil {
		hc.Count++
		b.SetHopCount(hc)
	}
	if age, ok, err := b.Age(); (ok && err == nil) || b.Primary.Creation.Time == 0 {
		b.SetAge(age + max(0, n.now().Sub(receivedAt)))
	}
	if peerCopies > 0 {
		setSprayCopies(b, peerCopies)
	}
	return b
}

// forwardable reports whether a held bundle may go to peer at all,
// whatever the strategy says.
func (n *Node) forwardable(m store.Meta, peer bundle.EID) bool {
	b := m.Bundle
	dst := b.Primary.Destination
	if dst.IsSingleton() && dst.SameNode(n.id) {
		return false // it is here: its destination has it
	}
	if b.IsAdminRecord() && dst.SameNode(n.id) {
		return false
	}
	if m.From == "peer:"+peer.String() {
		return false // never back to the node it came from
	}
	if prev, ok, _ := b.PreviousNode(); ok && prev.SameNode(peer) {
		return false
	}
	if hc, ok, _ := b.HopCount(); ok && hc.Count+1 > hc.Limit {
		return false
	}
	// The sweeper deletes expired bundles only every sweep interval; one
	// sent in between would only be refused as expired by the peer.
	if !m.ExpiresAt.After(n.now()) {
		return false
	}
	return true
}
