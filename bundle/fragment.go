package bundle

import (
	"io"
	"slices"
)

// Fragment returns the metadata of the fragment of b that carries the
// payload bytes [offset, offset+length) of b's payload (RFC 9171 §5.8). The
// caller supplies those bytes, for example with io.NewSectionReader. Blocks
// flagged BlockReplicate go into every fragment; the others only into the
// fragment that starts the application data unit. If b is already a
// fragment, the result is a fragment of the same original bundle.
//
// Reactive fragmentation uses this: after an interrupted transfer of which
// the first n payload bytes arrived, the receiver keeps b.Fragment(0, n) and
// the sender later sends only b.Fragment(n, len-n).
func (b *Bundle) Fragment(offset, length uint64) (*Bundle, error) {
	if length == 0 || offset > b.Payload.Length || length > b.Payload.Length-offset {
		return nil, wrap(ErrFragmentFields, "range [%d, %d) is not inside a payload of %d bytes", offset, offset+length, b.Payload.Length)
	}
	if offset == 0 && length == b.Payload.Length {
		return b.Clone(), nil
	}
	if b.Primary.Flags.Has(FlagMustNotFragment) {
		return nil, ErrNotFragmentable
	}
	f := b.Clone()
	base, total := uint64(0), b.Payload.Length
	if b.Primary.IsFragment() {
		base, total = b.Primary.FragmentOffset, b.Primary.TotalADULength
	}
	f.Primary.raw = nil
	f.Primary.Flags |= FlagIsFragment
	f.Primary.FragmentOffset = base + offset
	f.Primary.TotalADULength = total
	f.Payload.Length = length
	if f.Primary.FragmentOffset != 0 {
		kept := f.Blocks[:0]
		for _, blk := range f.Blocks {
			if blk.Flags.Has(BlockReplicate) {
				kept = append(kept, blk)
			}
		}
		f.Blocks = kept
	}
	return f, nil
}

// Piece is one fragment produced by Split: its metadata, and the range of
// the original payload it carries.
type Piece struct {
	Bundle *Bundle
	Offset uint64
	Length uint64
}

// Split divides b into fragments carrying at most maxPayload payload bytes
// each.
func (b *Bundle) Split(maxPayload uint64) ([]Piece, error) {
	if maxPayload == 0 {
		return nil, wrap(ErrFragmentFields, "fragment size must be positive")
	}
	var out []Piece
	for off := uint64(0); off < b.Payload.Length; off += maxPayload {
		n := min(maxPayload, b.Payload.Length-off)
		f, err := b.Fragment(off, n)
		if err != nil {
			return nil, err
		}
		out = append(out, Piece{Bundle: f, Offset: off, Length: n})
	}
	return out, nil
}

// Part is a received fragment and its payload, for Reassemble.
type Part struct {
	Bundle  *Bundle
	Payload io.ReaderAt
}

// Reassemble rebuilds the original bundle from fragments, which may overlap
// and may come in any order. It returns the bundle's metadata and a reader
// of its whole payload, which reads from the parts' payloads as it goes.
// It fails with ErrIncomplete if the fragments leave a gap, and with
// ErrFragmentMismatch if they are not all fragments of one bundle.
func Reassemble(parts []Part) (*Bundle, io.Reader, error) {
	if len(parts) == 0 {
		return nil, nil, wrap(ErrIncomplete, "no fragments")
	}
	first := parts[0].Bundle
	for _, p := range parts {
		pb := p.Bundle
		if !pb.Primary.IsFragment() {
			return nil, nil, wrap(ErrFragmentMismatch, "bundle %s is not a fragment", pb.ID())
		}
		if pb.Primary.Source != first.Primary.Source || pb.Primary.Creation != first.Primary.Creation || pb.Primary.TotalADULength != first.Primary.TotalADULength {
			return nil, nil, wrap(ErrFragmentMismatch, "%s and %s", first.ID(), pb.ID())
		}
	}
	sorted := slices.Clone(parts)
	slices.SortFunc(sorted, func(a, b Part) int {
		return cmpUint(a.Bundle.Primary.FragmentOffset, b.Bundle.Primary.FragmentOffset)
	})
	total := first.Primary.TotalADULength
	var readers []io.Reader
	var cursor uint64
	for _, p := range sorted {
		off, n := p.Bundle.Primary.FragmentOffset, p.Bundle.Payload.Length
		if off > cursor {
			return nil, nil, wrap(ErrIncomplete, "no fragment covers bytes [%d, %d) of %d", cursor, off, total)
		}
		if end := off + n; end > cursor {
			readers = append(readers, io.NewSectionReader(p.Payload, int64(cursor-off), int64(end-cursor)))
			cursor = end
		}
	}
	if cursor < total {
		return nil, nil, wrap(ErrIncomplete, "no fragment covers bytes [%d, %d)", cursor, total)
	}
	whole := sorted[0].Bundle.Clone()
	whole.Primary.raw = nil
	whole.Primary.Flags &^= FlagIsFragment
	whole.Primary.FragmentOffset, whole.Primary.TotalADULength = 0, 0
	whole.Payload.Length = total
	return whole, io.MultiReader(readers...), nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
