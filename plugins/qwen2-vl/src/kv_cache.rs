//! A paged KV cache: per layer, keys and values live in fixed-size blocks of
//! `block_size` token slots taken from a shared free list; each sequence owns a block
//! table (its blocks in order) and a length. A sequence grows a block at a time and
//! gives all its blocks back when it ends, so sequences of any lengths share one pool
//! without copying or padding.

use crate::{Error, Result};
use std::collections::HashMap;

/// Identifies a sequence in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// A sequence's blocks and cached length.
#[derive(Clone, Debug, Default)]
struct BlockTable {
    blocks: Vec<u32>,
    len: usize,
}

/// The cache of every layer's keys and values.
#[derive(Debug)]
pub struct PagedKvCache {
    block_size: usize,
    width: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    free: Vec<u32>,
    tables: HashMap<SeqId, BlockTable>,
}

impl PagedKvCache {
    /// A cache of `num_blocks` blocks of `block_size` tokens for `layers` layers, each
    /// token holding `width` (KV heads × head dim) keys and as many values.
    pub fn new(layers: usize, width: usize, block_size: usize, num_blocks: usize) -> Self {
        let size = num_blocks * block_size * width;
        Self {
            block_size,
            width,
            keys: (0..layers).map(|_| vec![0.0; size]).collect(),
            values: (0..layers).map(|_| vec![0.0; size]).collect(),
            // Popped from the end: block 0 first.
            free: (0..num_blocks as u32).rev().collect(),
            tables: HashMap::new(),
        }
    }

    /// Bytes of key and value storage, all layers: fixed at creation (blocks × block
    /// size × width × 2 × 4 bytes per layer).
    pub fn memory_bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|layer| layer.len() * std::mem::size_of::<f32>())
            .sum()
    }

    /// Blocks not held by any sequence.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Tokens cached for `seq` (0 for an unknown sequence).
    pub fn len(&self, seq: SeqId) -> usize {
        self.tables.get(&seq).map_or(0, |t| t.len)
    }

    /// Blocks `tokens` more tokens of `seq` would take from the free list.
    pub fn blocks_needed(&self, seq: SeqId, tokens: usize) -> usize {
        let table = self.tables.get(&seq);
        let held = table.map_or(0, |t| t.blocks.len());
        let want = (table.map_or(0, |t| t.len) + tokens).div_ceil(self.block_size);
        want.saturating_sub(held)
    }

    /// Makes room for `tokens` more tokens of `seq` (registering it if new); fails,
    /// changing nothing, when the free list is too short.
    pub fn reserve(&mut self, seq: SeqId, tokens: usize) -> Result<()> {
        let need = self.blocks_needed(seq, tokens);
        if need > self.free.len() {
            return Err(Error::CacheFull(format!(
                "{need} blocks needed, {} free",
                self.free.len()
            )));
        }
        let at = self.free.len() - need;
        let taken = self.free.split_off(at);
        self.tables
            .entry(seq)
            .or_default()
            .blocks
            .extend(taken.into_iter().rev());
        Ok(())
    }

    /// Marks `tokens` more tokens of `seq` as cached (after they were written).
    pub(crate) fn advance(&mut self, seq: SeqId, tokens: usize) {
        if let Some(t) = self.tables.get_mut(&seq) {
            t.len += tokens;
            debug_assert!(t.len <= t.blocks.len() * self.block_size);
        }
    }

    /// Gives every block of `seq` back to the free list.
    pub fn release(&mut self, seq: SeqId) {
        if let Some(table) = self.tables.remove(&seq) {
            self.free.extend(table.blocks.into_iter().rev());
        }
    }

    /// Offset of token `pos` of `seq` in a layer's storage.
    fn slot(&self, table: &BlockTable, pos: usize) -> usize {
        (table.blocks[pos / self.block_size] as usize * self.block_size + pos % self.block_size)
            * self.width
    }

    /// Stores the key and value of token `pos` of `seq` in `layer` (room reserved).
    pub(crate) fn write(
        &mut self,
        layer: usize,
        seq: SeqId,
        pos: usize,
        key: &[f32],
        value: &[f32],
    ) {
        let at = self.slot(&self.tables[&seq], pos);
        self.keys[layer][at..at + self.width].copy_from_slice(key);
        self.values[layer][at..at + self.width].copy_from_slice(value);
    }

    /// A read view of `seq`'s cached tokens in `layer`.
    pub(crate) fn view(&self, layer: usize, seq: SeqId) -> SeqView<'_> {
        SeqView {
            cache: self,
            table: &self.tables[&seq],
            layer,
        }
    }
}

/// The cached keys and values of one sequence in one layer.
pub(crate) struct SeqView<'a> {
    cache: &'a PagedKvCache,
    table: &'a BlockTable,
    layer: usize,
}

impl<'a> SeqView<'a> {
    /// Key of token `pos`, all KV heads.
    #[inline]
    pub(crate) fn key(&self, pos: usize) -> &'a [f32] {
        let at = self.cache.slot(self.table, pos);
        &self.cache.keys[self.layer][at..at + self.cache.width]
    }

    /// Value of token `pos`, all KV heads.
    #[inline]
    pub(crate) fn value(&self, pos: usize) -> &'a [f32] {
        let at = self.cache.slot(self.table, pos);
        &self.cache.values[self.layer][at..at + self.cache.width]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_what_the_configuration_bounds_it_to() {
        // 24 layers, 2 KV heads × 64, 2,048 blocks of 16 tokens (32,768 tokens).
        let mut cache = PagedKvCache::new(24, 128, 16, 2048);
        let bound = 32_768 * 24 * 2 * 128 * 4;
        assert_eq!(cache.memory_bytes(), bound);
        cache.reserve(SeqId(0), 32_768).unwrap();
        assert!(cache.reserve(SeqId(1), 1).is_err());
        assert_eq!(
            cache.memory_bytes(),
            bound,
            "a full cache allocates nothing more"
        );
    }

    #[test]
    fn blocks_come_from_the_free_list_and_go_back() {
        let mut cache = PagedKvCache::new(1, 2, 4, 3);
        let (a, b) = (SeqId(1), SeqId(2));
        cache.reserve(a, 5).unwrap(); // 2 blocks
        assert_eq!(cache.free_blocks(), 1);
        assert!(cache.reserve(b, 5).is_err());
        assert_eq!(cache.free_blocks(), 1, "a failed reservation takes nothing");
        cache.reserve(b, 4).unwrap();
        for pos in 0..5 {
            cache.write(0, a, pos, &[pos as f32, 0.0], &[0.0, pos as f32]);
        }
        cache.write(0, b, 0, &[9.0, 9.0], &[9.0, 9.0]);
        cache.advance(a, 5);
        let view = cache.view(0, a);
        assert_eq!(view.key(4), &[4.0, 0.0]);
        assert_eq!(view.value(3), &[0.0, 3.0]);
        assert_eq!(cache.len(a), 5);
        assert_eq!(cache.blocks_needed(a, 3), 0);
        assert_eq!(cache.blocks_needed(a, 4), 1);
        cache.release(a);
        assert_eq!(cache.free_blocks(), 2);
        assert_eq!(cache.view(0, b).key(0), &[9.0, 9.0]);
    }
}
