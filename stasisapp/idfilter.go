package stasisapp

import (
	"hash/maphash"
	"time"
)

// idFilter remembers, compactly, the ids of ended calls that MaxFinished pushed out of
// memory, until their retention ends: a new id the filter does not hold cannot repeat
// one of them and needs no look-up in the event stream. It is a list of Bloom filters
// of filterBlockIDs ids each, oldest first; a block is dropped once every id in it has
// expired. A Bloom filter has no false negatives; a false positive (about 1 in 2000 per
// block) costs one look-up. Memory: 2 bytes per id held, 128 KiB per block.
type idFilter struct {
	seed   maphash.Seed
	blocks []*filterBlock
}

type filterBlock struct {
	bits  []uint64
	n     int       // ids added
	until time.Time // the latest expiry of an id in the block
}

const (
	filterBlockIDs  = 1 << 16
	filterBlockBits = filterBlockIDs * 16 // bits per block: 16 per id
	filterHashes    = 11                  // ≈ 16·ln 2, the count that minimises false positives
)

func newIDFilter() *idFilter { return &idFilter{seed: maphash.MakeSeed()} }

// add holds id until expires.
func (f *idFilter) add(id string, expires, now time.Time) {
	f.drop(now)
	if len(f.blocks) == 0 || f.blocks[len(f.blocks)-1].n >= filterBlockIDs {
		f.blocks = append(f.blocks, &filterBlock{bits: make([]uint64, filterBlockBits/64)})
	}
	b := f.blocks[len(f.blocks)-1]
	h1, h2 := f.hash(id)
	for i := range uint32(filterHashes) {
		b.set(h1 + i*h2)
	}
	b.n++
	if expires.After(b.until) {
		b.until = expires
	}
}

// mayHold reports whether id may be held (false: it certainly is not).
func (f *idFilter) mayHold(id string, now time.Time) bool {
	f.drop(now)
	if len(f.blocks) == 0 {
		return false
	}
	h1, h2 := f.hash(id)
	for _, b := range f.blocks {
		if b.holds(h1, h2) {
			return true
		}
	}
	return false
}

// set sets the block's bit for hash position h.
func (b *filterBlock) set(h uint32) {
	h %= filterBlockBits
	b.bits[h/64] |= 1 << (h % 64)
}

// holds reports whether every bit of the id hashed to h1, h2 is set.
func (b *filterBlock) holds(h1, h2 uint32) bool {
	for i := range uint32(filterHashes) {
		h := (h1 + i*h2) % filterBlockBits
		if b.bits[h/64]&(1<<(h%64)) == 0 {
			return false
		}
	}
	return true
}

// drop forgets the oldest blocks whose ids have all expired.
func (f *idFilter) drop(now time.Time) {
	n := 0
	for n < len(f.blocks) && now.After(f.blocks[n].until) {
		n++
	}
	if n > 0 {
		f.blocks = append(f.blocks[:0], f.blocks[n:]...)
	}
}

// hash gives the two hashes the block's bit positions are made from (h1 + i·h2,
// Kirsch and Mitzenmacher); h2 is odd so the positions do not repeat early.
func (f *idFilter) hash(id string) (h1, h2 uint32) {
	h := maphash.String(f.seed, id)
	return uint32(h), uint32(h>>32) | 1
}
