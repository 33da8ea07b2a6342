//! Join keys carried across stages: the writers of a stage feeding one side
//! of a join summarise the keys they wrote, the control plane merges the
//! summaries, and a stage feeding the other side drops rows whose keys cannot
//! match before it shuffles them.
//!
//! ```text
//!   source stage (writer summarises)     target stage (started after the source commits)
//!   task 0 ─ keys ─┐                      scan ─▶ KeyFilterExec ─▶ ShuffleWriterExec
//!   task 1 ─ keys ─┼─▶ control plane ──▶  (min/max per key column, and a Bloom filter of
//!   task 2 ─ keys ─┘    merges            the keys' hashes; rows with a null key dropped)
//! ```
//!
//! # What belongs here
//! What both ends must agree on: how a row's keys are hashed (portable: the
//! two sides may run on different machines and builds), the Bloom filter,
//! summarising one writer's keys ([`KeySummarizer`]), merging many into one
//! [`KeyFilter`], and the plan node that applies it ([`KeyFilterExec`]). When
//! a filter is valid (which joins, which null semantics) is the planner's.

mod exec;

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::kernels::cmp::{gt_eq, lt_eq};
use arrow::compute::{and, filter};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, ScalarValue, internal_datafusion_err};
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion_proto::protobuf;
use prost::Message;
use twox_hash::XxHash64;

pub use exec::{KeyFilterExec, ROWS_REMOVED_METRIC};

use crate::protocol::{KeyBounds, KeySummary};

/// Distinct keys one writer lists by hash; past this it keeps a Bloom filter
/// of the size its plan gives (see [`KeySet`]) instead.
pub const MAX_TASK_HASHES: usize = 1 << 16;
/// Most blocks of any Bloom filter: 4 MiB, about 3.3 M keys at 10 bits a key.
pub const MAX_BLOOM_BLOCKS: usize = 1 << 17;

/// A set of key columns a writer summarises, and the blocks of the Bloom
/// filter it keeps if the keys are too many to list: the same for every
/// task of the stage, so that their filters merge, sized for the keys the
/// planner expects the whole stage to write.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub bloom_blocks: usize,
}

impl KeySet {
    /// Blocks for about `rows` distinct keys at [`BLOOM_BITS_PER_KEY`], a
    /// power of two within [1 KiB, [`MAX_BLOOM_BLOCKS`]]; unknown: the most.
    pub fn blocks_for(rows: Option<usize>) -> usize {
        match rows {
            Some(rows) => (rows.saturating_mul(BLOOM_BITS_PER_KEY) / 256)
                .next_power_of_two()
                .clamp(32, MAX_BLOOM_BLOCKS),
            None => MAX_BLOOM_BLOCKS,
        }
    }
}
/// Bits a merged filter gives each distinct key (about 1 % false positives).
pub const BLOOM_BITS_PER_KEY: usize = 10;
/// A merged Bloom filter more than this full lets most rows through: left out.
const MAX_BLOOM_FILL: f64 = 0.6;
/// Seed of the keys' hash: any fixed value, the same on both sides.
const SEED: u64 = 0x5155_414c_4c4b_4559;

/// Whether a key column's type can be summarised: not floats (NaN and -0.0
/// compare and hash unlike they join) and not nested types.
pub fn summarisable(data_type: &DataType) -> bool {
    !data_type.is_floating() && !data_type.is_nested() && *data_type != DataType::Null
}

/// Whether min/max of the type bound the values a join matches.
fn ordered(data_type: &DataType) -> bool {
    data_type.is_integer()
        || data_type.is_temporal()
        || matches!(
            data_type,
            DataType::Decimal32(_, _)
                | DataType::Decimal64(_, _)
                | DataType::Decimal128(_, _)
                | DataType::Decimal256(_, _)
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
        )
}

/// Hashes each row's keys: xxHash64 over arrow's row format, the same on
/// every platform and build of this arrow version.
pub fn hash_rows(converter: &RowConverter, keys: &[ArrayRef]) -> Result<Vec<u64>> {
    let rows = converter.convert_columns(keys)?;
    Ok(rows
        .iter()
        .map(|row| XxHash64::oneshot(SEED, row.as_ref()))
        .collect())
}

/// The key columns `keys` evaluate to over `batch`.
pub fn key_columns(keys: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    keys.iter()
        .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

/// A row converter for keys of these types.
pub fn key_converter(types: &[DataType]) -> Result<RowConverter> {
    Ok(RowConverter::new(
        types.iter().map(|t| SortField::new(t.clone())).collect(),
    )?)
}

/// Rows whose keys are all non-null (a null key matches nothing).
fn non_null(keys: &[ArrayRef]) -> Result<Option<BooleanArray>> {
    let mut mask: Option<BooleanArray> = None;
    for key in keys.iter().filter(|k| k.null_count() > 0) {
        let valid = arrow::compute::is_not_null(key.as_ref())?;
        mask = Some(match mask {
            Some(m) => and(&m, &valid)?,
            None => valid,
        });
    }
    Ok(mask)
}

/// A split-block Bloom filter: 256-bit blocks, one picked by a hash's high
/// half, eight bits set in it from its low half (one per 32-bit word).
#[derive(Clone, Debug, PartialEq)]
pub struct Bloom {
    blocks: Vec<[u32; 8]>,
}

/// Odd multipliers spreading a hash's low half over a block's eight words.
const SALT: [u32; 8] = [
    0x9E37_79B1,
    0x85EB_CA77,
    0xC2B2_AE3D,
    0x27D4_EB2F,
    0x1656_67B1,
    0xD3A2_646D,
    0xFD70_46C5,
    0xB55A_4F09,
];

impl Bloom {
    pub fn with_blocks(blocks: usize) -> Self {
        Self {
            blocks: vec![[0; 8]; blocks.max(1)],
        }
    }

    /// Sized for `keys` distinct keys at [`BLOOM_BITS_PER_KEY`], at most
    /// [`MAX_BLOOM_BLOCKS`].
    pub fn for_keys(keys: usize) -> Self {
        Self::with_blocks(
            keys.saturating_mul(BLOOM_BITS_PER_KEY)
                .div_ceil(256)
                .min(MAX_BLOOM_BLOCKS),
        )
    }

    fn block(&self, hash: u64) -> usize {
        (((hash >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    fn mask(hash: u64) -> [u32; 8] {
        let low = hash as u32;
        SALT.map(|salt| 1u32 << (low.wrapping_mul(salt) >> 27))
    }

    pub fn insert(&mut self, hash: u64) {
        let i = self.block(hash);
        let mask = Self::mask(hash);
        for (word, bit) in self.blocks[i].iter_mut().zip(mask) {
            *word |= bit;
        }
    }

    pub fn contains(&self, hash: u64) -> bool {
        let block = &self.blocks[self.block(hash)];
        block
            .iter()
            .zip(Self::mask(hash))
            .all(|(w, bit)| w & bit != 0)
    }

    /// Adds every key of `other`, a filter of as many blocks.
    fn union(&mut self, other: &Bloom) -> Result<()> {
        if other.blocks.len() != self.blocks.len() {
            return Err(internal_datafusion_err!(
                "Bloom filters of {} and {} blocks do not merge",
                self.blocks.len(),
                other.blocks.len()
            ));
        }
        for (mine, theirs) in self.blocks.iter_mut().zip(&other.blocks) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a |= b;
            }
        }
        Ok(())
    }

    /// The share of bits set.
    pub fn fill(&self) -> f64 {
        let set: u32 = self.blocks.iter().flatten().map(|w| w.count_ones()).sum();
        f64::from(set) / (self.blocks.len() * 256) as f64
    }

    pub fn size_bytes(&self) -> usize {
        self.blocks.len() * 32
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.blocks
            .iter()
            .flatten()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(32) {
            return Err(internal_datafusion_err!(
                "a Bloom filter of {} bytes is not whole blocks",
                bytes.len()
            ));
        }
        let blocks = bytes
            .chunks_exact(32)
            .map(|block| {
                let mut words = [0u32; 8];
                for (w, b) in words.iter_mut().zip(block.chunks_exact(4)) {
                    *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                words
            })
            .collect();
        Ok(Self { blocks })
    }
}

fn encode_scalar(value: &ScalarValue) -> Result<Vec<u8>> {
    Ok(protobuf::ScalarValue::try_from(value)
        .map_err(|e| internal_datafusion_err!("cannot encode a key bound: {e}"))?
        .encode_to_vec())
}

fn decode_scalar(bytes: &[u8]) -> Result<ScalarValue> {
    let proto = protobuf::ScalarValue::decode(bytes)
        .map_err(|e| internal_datafusion_err!("cannot decode a key bound: {e}"))?;
    ScalarValue::try_from(&proto).map_err(|e| internal_datafusion_err!("bad key bound: {e}"))
}

/// The smallest and largest value of one key column, where its type is ordered.
struct Range {
    min: MinAccumulator,
    max: MaxAccumulator,
}

/// Summarises the keys one writer sees, batch by batch.
pub struct KeySummarizer {
    converter: RowConverter,
    bloom_blocks: usize,
    ranges: Vec<Option<Range>>,
    rows: u64,
    hashes: HashSet<u64>,
    bloom: Option<Bloom>,
}

impl KeySummarizer {
    /// A summariser of keys of `types`, keeping a Bloom filter of
    /// `bloom_blocks` when they are too many to list.
    pub fn new(types: &[DataType], bloom_blocks: usize) -> Result<Self> {
        let ranges = types
            .iter()
            .map(|t| {
                Ok(if ordered(t) {
                    Some(Range {
                        min: MinAccumulator::try_new(t)?,
                        max: MaxAccumulator::try_new(t)?,
                    })
                } else {
                    None
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            converter: key_converter(types)?,
            bloom_blocks: bloom_blocks.clamp(1, MAX_BLOOM_BLOCKS),
            ranges,
            rows: 0,
            hashes: HashSet::new(),
            bloom: None,
        })
    }

    /// Takes in one batch's key columns.
    pub fn update(&mut self, keys: &[ArrayRef]) -> Result<()> {
        let keys = match non_null(keys)? {
            Some(mask) => keys
                .iter()
                .map(|k| Ok(filter(k.as_ref(), &mask)?))
                .collect::<Result<Vec<_>>>()?,
            None => keys.to_vec(),
        };
        let Some(first) = keys.first() else {
            return Ok(());
        };
        if first.is_empty() {
            return Ok(());
        }
        self.rows += first.len() as u64;
        for (range, key) in self.ranges.iter_mut().zip(&keys) {
            if let Some(range) = range {
                range.min.update_batch(std::slice::from_ref(key))?;
                range.max.update_batch(std::slice::from_ref(key))?;
            }
        }
        let hashes = hash_rows(&self.converter, &keys)?;
        if let Some(bloom) = &mut self.bloom {
            hashes.into_iter().for_each(|h| bloom.insert(h));
            return Ok(());
        }
        self.hashes.extend(hashes);
        if self.hashes.len() > MAX_TASK_HASHES {
            let mut bloom = Bloom::with_blocks(self.bloom_blocks);
            self.hashes.drain().for_each(|h| bloom.insert(h));
            self.bloom = Some(bloom);
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<KeySummary> {
        let bounds = self
            .ranges
            .iter_mut()
            .map(|range| {
                let Some(range) = range else { return Ok(None) };
                let (min, max) = (range.min.evaluate()?, range.max.evaluate()?);
                if self.rows == 0 || min.is_null() || max.is_null() {
                    return Ok(None);
                }
                Ok(Some(KeyBounds {
                    min: encode_scalar(&min)?,
                    max: encode_scalar(&max)?,
                }))
            })
            .collect::<Result<_>>()?;
        let mut hashes: Vec<u64> = self.hashes.into_iter().collect();
        hashes.sort_unstable();
        Ok(KeySummary {
            rows: self.rows,
            bounds,
            hashes: hashes.iter().flat_map(|h| h.to_le_bytes()).collect(),
            bloom: self.bloom.map(|b| b.to_bytes()).unwrap_or_default(),
        })
    }
}

/// What the probe side keeps: rows whose keys are all non-null, within every
/// column's bounds, and (where there is one) in the Bloom filter.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyFilter {
    /// Rows with non-null keys on the build side: 0 keeps no probe row.
    pub build_rows: u64,
    /// Per key column, the bounds (None: not bounded).
    pub bounds: Vec<Option<(ScalarValue, ScalarValue)>>,
    pub bloom: Option<Bloom>,
    /// Distinct keys listed by the writers (a lower bound where some kept a
    /// Bloom filter instead).
    pub distinct_keys: u64,
}

impl KeyFilter {
    /// Merges the summaries of every writer of a build side (`columns` key columns).
    pub fn merge(summaries: &[&KeySummary], columns: usize) -> Result<Self> {
        let build_rows = summaries.iter().map(|s| s.rows).sum();
        let with_rows: Vec<&&KeySummary> = summaries.iter().filter(|s| s.rows > 0).collect();
        let mut bounds = Vec::with_capacity(columns);
        for column in 0..columns {
            bounds.push(merged_bounds(&with_rows, column)?);
        }
        let mut hashes = HashSet::new();
        for summary in &with_rows {
            if !summary.hashes.len().is_multiple_of(8) {
                return Err(internal_datafusion_err!(
                    "a key summary's hashes are cut short"
                ));
            }
            hashes.extend(
                summary
                    .hashes
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
            );
        }
        let blooms = with_rows
            .iter()
            .filter(|s| !s.bloom.is_empty())
            .map(|s| Bloom::from_bytes(&s.bloom))
            .collect::<Result<Vec<_>>>()?;
        let distinct_keys = hashes.len() as u64;
        let mut bloom = match blooms.first() {
            Some(first) => Bloom::with_blocks(first.blocks.len()),
            None => Bloom::for_keys(hashes.len()),
        };
        for other in &blooms {
            bloom.union(other)?;
        }
        hashes.into_iter().for_each(|h| bloom.insert(h));
        let bloom = (build_rows > 0 && bloom.fill() <= MAX_BLOOM_FILL).then_some(bloom);
        Ok(Self {
            build_rows,
            bounds,
            bloom,
            distinct_keys,
        })
    }

    /// Which rows of these key columns the filter keeps.
    pub fn keep(&self, converter: &RowConverter, keys: &[ArrayRef]) -> Result<BooleanArray> {
        let rows = keys.first().map_or(0, |k| k.len());
        if self.build_rows == 0 {
            return Ok(BooleanArray::from(vec![false; rows]));
        }
        let mut mask = non_null(keys)?;
        for (key, bounds) in keys.iter().zip(&self.bounds) {
            let Some((min, max)) = bounds else { continue };
            let within = and(
                &gt_eq(key, &min.to_scalar()?)?,
                &lt_eq(key, &max.to_scalar()?)?,
            )?;
            mask = Some(match mask {
                Some(m) => and(&m, &within)?,
                None => within,
            });
        }
        let Some(bloom) = &self.bloom else {
            return Ok(mask.unwrap_or_else(|| BooleanArray::from(vec![true; rows])));
        };
        let hashes = hash_rows(converter, keys)?;
        let found: BooleanArray = hashes.iter().map(|h| Some(bloom.contains(*h))).collect();
        Ok(match mask {
            Some(m) => and(&m, &found)?,
            None => found,
        })
    }

    /// The bounds as they travel (datafusion-proto scalars).
    pub fn wire_bounds(&self) -> Result<Vec<Option<KeyBounds>>> {
        self.bounds
            .iter()
            .map(|b| match b {
                Some((min, max)) => Ok(Some(KeyBounds {
                    min: encode_scalar(min)?,
                    max: encode_scalar(max)?,
                })),
                None => Ok(None),
            })
            .collect()
    }

    /// A filter from its travelling form (see [`KeyFilter::wire_bounds`]).
    pub fn from_wire(
        build_rows: u64,
        distinct_keys: u64,
        bounds: &[Option<KeyBounds>],
        bloom: &[u8],
    ) -> Result<Self> {
        let bounds = bounds
            .iter()
            .map(|b| match b {
                Some(b) => Ok(Some((decode_scalar(&b.min)?, decode_scalar(&b.max)?))),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        let bloom = if bloom.is_empty() {
            None
        } else {
            Some(Bloom::from_bytes(bloom)?)
        };
        Ok(Self {
            build_rows,
            bounds,
            bloom,
            distinct_keys,
        })
    }

    /// One line for plans and the job view: what the filter holds.
    pub fn describe(&self) -> String {
        if self.build_rows == 0 {
            return "empty build side".to_string();
        }
        let mut parts = Vec::new();
        for (i, bounds) in self.bounds.iter().enumerate() {
            if let Some((min, max)) = bounds {
                parts.push(format!("key {i} in [{min}, {max}]"));
            }
        }
        if let Some(bloom) = &self.bloom {
            parts.push(format!(
                "bloom {} KiB of {} keys",
                bloom.size_bytes().div_ceil(1024),
                self.distinct_keys
            ));
        }
        if parts.is_empty() {
            "non-null keys".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// The bounds of key column `column` over every writer that saw rows: None
/// when any of them had none for it.
fn merged_bounds(
    summaries: &[&&KeySummary],
    column: usize,
) -> Result<Option<(ScalarValue, ScalarValue)>> {
    let mut merged: Option<(ScalarValue, ScalarValue)> = None;
    for summary in summaries {
        let Some(Some(bounds)) = summary.bounds.get(column) else {
            return Ok(None);
        };
        let (min, max) = (decode_scalar(&bounds.min)?, decode_scalar(&bounds.max)?);
        merged = Some(match merged {
            None => (min, max),
            Some((lo, hi)) => {
                let lo = if min.partial_cmp(&lo) == Some(std::cmp::Ordering::Less) {
                    min
                } else {
                    lo
                };
                let hi = if max.partial_cmp(&hi) == Some(std::cmp::Ordering::Greater) {
                    max
                } else {
                    hi
                };
                (lo, hi)
            }
        });
    }
    Ok(merged)
}

/// The filter as an `Arc`, as plan nodes hold it.
pub type SharedKeyFilter = Arc<KeyFilter>;

#[cfg(test)]
mod tests;
