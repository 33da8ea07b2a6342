//! Scan splits: one scan task per object-store partition — a whole file, or a byte
//! range of a large Parquet file that covers whole row groups — sized by a target.
//!
//! The splits are computed before planning (listing, and one footer read per large
//! Parquet file) and applied by [`SplitScans`], a physical optimizer rule that runs
//! first, so that DataFusion's own rules (distribution enforcement, join selection)
//! see the partition counts the tasks will really have.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result as DfResult, config::ConfigOptions};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::{ObjectMeta, ObjectStore};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::error::{Result, SquallError};
use crate::tables::{ResolvedTable, TableFormat};

/// Parquet footers read at once while planning.
const FOOTER_READS: usize = 16;

/// Byte ranges to scan as separate tasks, by object path. Files not listed are
/// scanned whole.
#[derive(Debug, Default, Clone)]
pub struct ScanSplits {
    ranges: HashMap<String, Vec<Range<u64>>>,
}

impl ScanSplits {
    /// Splits every Parquet file larger than `target_bytes` on row-group boundaries.
    /// Footers are read [`FOOTER_READS`] at a time.
    pub async fn compute(
        tables: &[ResolvedTable],
        store_for: impl Fn(&ResolvedTable) -> Result<Arc<dyn ObjectStore>>,
        target_bytes: u64,
    ) -> Result<Self> {
        let mut large = Vec::new();
        for table in tables.iter().filter(|t| t.format == TableFormat::Parquet) {
            let store = store_for(table)?;
            for file in table.files.iter().filter(|f| f.size > target_bytes) {
                large.push((table, store.clone(), file));
            }
        }
        let mut reads = futures::stream::iter(large)
            .map(|(table, store, file)| async move {
                let split = split_parquet(&store, file, target_bytes)
                    .await
                    .map_err(|e| SquallError::Table {
                        table: table.spec.name.clone(),
                        message: format!("cannot read the footer of {}: {e}", file.location),
                    })?;
                Ok::<_, SquallError>((file.location.to_string(), split))
            })
            .buffer_unordered(FOOTER_READS);
        let mut ranges = HashMap::new();
        while let Some(read) = reads.next().await {
            let (location, split) = read?;
            if split.len() > 1 {
                ranges.insert(location, split);
            }
        }
        Ok(Self { ranges })
    }

    /// Regroups a scan's files into one group per split.
    fn regroup(&self, config: &FileScanConfig) -> Vec<FileGroup> {
        let mut groups = Vec::new();
        for file in config.file_groups.iter().flat_map(|g| g.iter()) {
            match (
                file.range.is_none(),
                self.ranges.get(file.object_meta.location.as_ref()),
            ) {
                (true, Some(ranges)) => {
                    for r in ranges {
                        let piece = file.clone().with_range(r.start as i64, r.end as i64);
                        groups.push(FileGroup::new(vec![piece]));
                    }
                }
                _ => groups.push(FileGroup::new(vec![file.clone()])),
            }
        }
        groups
    }
}

/// Byte ranges of `file`, each starting at a row group and holding about
/// `target_bytes` of row groups. DataFusion reads a row group in the range that
/// holds the offset of its first page, so the ranges cover every group once.
async fn split_parquet(
    store: &Arc<dyn ObjectStore>,
    file: &ObjectMeta,
    target_bytes: u64,
) -> DfResult<Vec<Range<u64>>> {
    // One ranged GET of the tail usually holds the whole footer; a second if not.
    let mut want = file.size.min(64 * 1024);
    let mut reader = ParquetMetaDataReader::new();
    loop {
        let tail = store
            .get_range(&file.location, file.size - want..file.size)
            .await
            .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
        match reader.try_parse_sized(&tail, file.size) {
            Ok(()) => break,
            Err(ParquetError::NeedMoreData(needed)) if (needed as u64) > want => {
                want = (needed as u64).min(file.size)
            }
            Err(e) => return Err(e.into()),
        }
    }
    let metadata = reader.finish()?;
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
