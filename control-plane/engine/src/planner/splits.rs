//! Scan splits: each scan task reads object-store partitions — whole files, or byte
//! ranges of a large Parquet file that cover whole row groups — of about a target
//! size. Small files are packed together (down to one task per executor), large
//! Parquet files split.
//!
//! The splits are computed before planning (listing, and one footer read per large
//! Parquet file) and applied by [`SplitScans`], a physical optimizer rule that runs
//! first, so that DataFusion's own rules (distribution enforcement, join selection)
//! see the partition counts the tasks will really have.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result as DfResult, config::ConfigOptions};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};

use crate::error::{Result, SquallError};
use crate::tables::{ResolvedTable, TableFormat};

/// Parquet footers read at once while planning.
const FOOTER_READS: usize = 16;
/// Bytes of a file's tail fetched first when reading its footer.
const FOOTER_HINT_BYTES: usize = 64 * 1024;

/// Byte ranges to scan as separate tasks, by object path. Files not listed are
/// scanned whole.
#[derive(Debug, Default, Clone)]
pub struct ScanSplits {
    ranges: HashMap<String, Vec<Range<u64>>>,
    target_bytes: u64,
    min_groups: usize,
    min_group_bytes: u64,
}

/// A Parquet file to split: its table's name, its store, the file.
type LargeFile = (String, Arc<dyn ObjectStore + 'static>, ObjectMeta);

/// Reading one file's footer and splitting it: its location and ranges.
type FooterRead = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(String, Vec<std::ops::Range<u64>>)>> + Send>,
>;

impl ScanSplits {
    /// Splits every Parquet file larger than `target_bytes` on row-group boundaries
    /// (footers are read [`FOOTER_READS`] at a time); scans will pack files and
    /// splits into tasks of about `target_bytes`, at least `min_tasks` per scan
    /// while each still gets `min_task_bytes`.
    pub async fn compute(
        tables: &[ResolvedTable],
        store_for: impl Fn(&ResolvedTable) -> Result<Arc<dyn ObjectStore>>,
        footers: &Arc<FileMetadataCache>,
        target_bytes: u64,
        min_tasks: usize,
        min_task_bytes: u64,
    ) -> Result<Self> {
        let mut large: Vec<LargeFile> = Vec::new();
        for table in tables.iter().filter(|t| t.format == TableFormat::Parquet) {
            let store = store_for(table)?;
            for file in table.files.iter().filter(|f| f.size > target_bytes) {
                large.push((table.spec.name.clone(), store.clone(), file.clone()));
            }
        }
        // Boxed futures over owned items, built before the first await: a stream
        // that keeps a closure across awaits makes the job future not provably
        // `Send` (rustc cannot generalise the closure's lifetimes).
        let reads: Vec<FooterRead> = large
            .into_iter()
            .map(|(table, store, file)| {
                let footers = footers.clone();
                Box::pin(async move {
                    let split = split_parquet(&store, &footers, &file, target_bytes)
                        .await
                        .map_err(|e| SquallError::Table {
                            table,
                            message: format!("cannot read the footer of {}: {e}", file.location),
                        })?;
                    Ok::<_, SquallError>((file.location.to_string(), split))
                }) as FooterRead
            })
            .collect();
        let mut reads = futures::stream::iter(reads).buffer_unordered(FOOTER_READS);
        let mut ranges = HashMap::new();
        while let Some(read) = reads.next().await {
            let (location, split) = read?;
            if split.len() > 1 {
                ranges.insert(location, split);
            }
        }
        Ok(Self {
            ranges,
            target_bytes,
            min_groups: min_tasks,
            min_group_bytes: min_task_bytes,
        })
    }

    /// Regroups a scan's files: large Parquet files become one piece per split,
    /// then pieces are packed into groups of about `target_bytes`, one group per
    /// task — but never fewer groups than `min_groups` (or pieces), so that small
    /// tables still spread over the executors.
    fn regroup(&self, config: &FileScanConfig) -> Vec<FileGroup> {
        let mut pieces: Vec<(PartitionedFile, u64)> = Vec::new();
        for file in config.file_groups.iter().flat_map(|g| g.iter()) {
            match (
                file.range.is_none(),
                self.ranges.get(file.object_meta.location.as_ref()),
            ) {
                (true, Some(ranges)) => {
                    for r in ranges {
                        let piece = file.clone().with_range(r.start as i64, r.end as i64);
                        pieces.push((piece, r.end - r.start));
                    }
                }
                _ => {
                    let size = match &file.range {
                        Some(r) => (r.end - r.start).max(0) as u64,
                        None => file.object_meta.size,
                    };
                    pieces.push((file.clone(), size));
                }
            }
        }
        pack(
            pieces,
            self.target_bytes,
            self.min_groups,
            self.min_group_bytes,
        )
    }
}

/// Packs pieces, in order, into groups of about `target` bytes: as many groups as
/// the bytes need, at least `min_groups` (when there are that many pieces and
/// each group still gets `min_group_bytes`).
fn pack(
    pieces: Vec<(PartitionedFile, u64)>,
    target: u64,
    min_groups: usize,
    min_group_bytes: u64,
) -> Vec<FileGroup> {
    if pieces.is_empty() {
        return vec![];
    }
    let total: u64 = pieces.iter().map(|(_, size)| size).sum();
    let by_size = total.div_ceil(target.max(1)) as usize;
    let worth = match total.checked_div(min_group_bytes) {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => usize::MAX,
    };
    let groups = by_size.max(min_groups.min(worth)).clamp(1, pieces.len());
    let per_group = total.div_ceil(groups as u64).max(1);
    let mut out: Vec<Vec<PartitionedFile>> = Vec::with_capacity(groups);
    let mut current: Vec<PartitionedFile> = Vec::new();
    let mut held = 0u64;
    let remaining_pieces = pieces.len();
    for (i, (piece, size)) in pieces.into_iter().enumerate() {
        // Start a new group when this piece would put this one more than half a
        // piece over its share, or when the pieces left are only just enough to
        // give every remaining group one.
        let groups_left = groups.saturating_sub(out.len() + 1);
        let pieces_left = remaining_pieces - i;
        let full = held + size / 2 > per_group;
        if !current.is_empty() && (full || pieces_left <= groups_left) {
            out.push(std::mem::take(&mut current));
            held = 0;
        }
        current.push(piece);
        held += size;
    }
    out.push(current);
    out.into_iter().map(FileGroup::new).collect()
}

/// Byte ranges of `file`, each starting at a row group and holding about
/// `target_bytes` of row groups. DataFusion reads a row group in the range that
/// holds the offset of its first page, so the ranges cover every group once.
async fn split_parquet(
    store: &Arc<dyn ObjectStore>,
    footers: &Arc<FileMetadataCache>,
    file: &ObjectMeta,
    target_bytes: u64,
) -> DfResult<Vec<Range<u64>>> {
    // One ranged GET of the tail usually holds the whole footer; a second if not.
    let metadata = DFParquetMetadata::new(store.as_ref(), file)
        .with_metadata_size_hint(Some(FOOTER_HINT_BYTES))
        .with_file_metadata_cache(Some(footers.clone()))
        .fetch_metadata()
        .await?;
    let mut starts = Vec::new();
    let mut acc = 0u64;
    for (i, group) in metadata.row_groups().iter().enumerate() {
        if i == 0 || acc >= target_bytes {
            let col = group.column(0);
            let start = col
                .dictionary_page_offset()
                .unwrap_or_else(|| col.data_page_offset());
            starts.push(if i == 0 { 0 } else { start as u64 });
            acc = 0;
        }
        acc += group.compressed_size() as u64;
    }
    let mut ranges: Vec<Range<u64>> = starts.windows(2).map(|w| w[0]..w[1]).collect();
    if let Some(last) = starts.last() {
        ranges.push(*last..file.size);
    }
    Ok(ranges)
}

/// Optimizer rule: every file scan gets one partition per split.
#[derive(Debug)]
pub struct SplitScans {
    splits: Arc<ScanSplits>,
}

impl SplitScans {
    pub fn new(splits: Arc<ScanSplits>) -> Self {
        Self { splits }
    }
}

impl PhysicalOptimizerRule for SplitScans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            let groups = self.splits.regroup(config);
            if groups.is_empty() {
                return Ok(Transformed::no(node));
            }
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(groups)
                .build();
            Ok(Transformed::yes(
                DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "squall_split_scans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(sizes: &[u64]) -> Vec<(PartitionedFile, u64)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, s)| (PartitionedFile::new(format!("f{i}"), *s), *s))
            .collect()
    }

    fn shape(groups: &[FileGroup]) -> Vec<usize> {
        groups.iter().map(|g| g.len()).collect()
    }

    #[test]
    fn packs_small_files_but_keeps_min_groups() {
        // Eight tiny files, two executors: two tasks of four files.
        assert_eq!(shape(&pack(pieces(&[10; 8]), 1000, 2, 0)), vec![4, 4]);
        // Files of slightly different sizes still make two tasks, not three.
        assert_eq!(
            shape(&pack(pieces(&[10, 11, 10, 12, 10, 9, 10, 11]), 1000, 2, 0)),
            vec![4, 4]
        );
        // One executor: one task.
        assert_eq!(shape(&pack(pieces(&[10; 8]), 1000, 1, 0)), vec![8]);
        // Never more groups than pieces.
        assert_eq!(shape(&pack(pieces(&[10; 3]), 1000, 7, 0)), vec![1, 1, 1]);
        // Bytes decide when there are more of them than the target holds.
        assert_eq!(shape(&pack(pieces(&[100; 8]), 200, 1, 0)), vec![2, 2, 2, 2]);
        // Every piece lands in exactly one group, in order.
        let groups = pack(pieces(&[5, 300, 5, 5, 290, 5]), 300, 2, 0);
        let names: Vec<String> = groups
            .iter()
            .flat_map(|g| g.iter().map(|f| f.object_meta.location.to_string()))
            .collect();
        assert_eq!(names, ["f0", "f1", "f2", "f3", "f4", "f5"]);
        assert!(pack(vec![], 100, 2, 0).is_empty());
    }

    #[test]
    fn tasks_too_small_to_be_worth_starting_are_not_cut_for_parallelism() {
        // 1,000 files of 10 bytes, 1,000 workers, a task worth 2,000 bytes:
        // five tasks, not a thousand.
        assert_eq!(pack(pieces(&[10; 1000]), 1 << 20, 1000, 2000).len(), 5);
        // Less than one task's worth: one task.
        assert_eq!(shape(&pack(pieces(&[10; 8]), 1000, 2, 1000)), vec![8]);
        // Bytes past the target still cut it, whatever the floor.
        assert_eq!(pack(pieces(&[100; 8]), 200, 1, 1 << 30).len(), 4);
        // Enough bytes: the parallelism asked for stands.
        assert_eq!(pack(pieces(&[10; 8]), 1000, 2, 40).len(), 2);
    }
}
