//! Scan splits: each scan task reads object-store partitions — whole files, or byte
//! ranges of a large Parquet file that cover whole row groups — of about a target
//! size of the columns it reads. Small files are packed together (down to one task
//! per executor), large Parquet files split.
//!
//! The splits are computed before planning (listing, and one footer read per large
//! Parquet file and a few more per table) and applied by [`SplitScans`], a physical
//! optimizer rule that runs first, so that DataFusion's own rules (distribution
//! enforcement, join selection) see the partition counts the tasks will really
//! have. A Parquet scan's pieces are weighed by the share of its files' bytes that
//! the columns it reads hold (from the footers read): a query of 4 of 16 columns
//! packs about four times the files into a task, whose reads are then the target.
//! And by their requests: a task reads a range for each column of each row group,
//! so a piece weighs at least its share of a task of [`MAX_SCAN_REQUESTS`]
//! reads (a scan of two narrow columns is not packed into hundreds of reads).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result as DfResult, config::ConfigOptions};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};
use squall_executor::regrouped;
use squall_executor::stores::local_scheme;

use super::slices::scan_config;
use crate::error::{Result, SquallError};
use crate::tables::{ResolvedTable, TableFormat};

/// Parquet footers read at once while planning.
const FOOTER_READS: usize = 16;
/// Footers read per Parquet table for its columns' shares of its bytes (its
/// large files' footers count towards them).
const SHARE_SAMPLES: usize = 4;
/// Reads (a footer, a range per column of a row group) a scan task makes at
/// most, as far as the footers read tell: as many as a combiner of a
/// two-level exchange reads.
pub const MAX_SCAN_REQUESTS: u64 = 48;
/// The least share of a file's bytes a scan is weighed by, however few
/// columns it reads (its footer, its row groups' starts): a task holds at
/// most this many times the target of files.
const MIN_SHARE: f64 = 1.0 / 16.0;
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
    /// Of each Parquet table, the bytes of its columns in the footers read.
    columns: Vec<ColumnBytes>,
    /// The index in `columns` of each Parquet file's table, by location.
    table_of: HashMap<String, usize>,
}

/// Compressed bytes of a table's top-level columns, by name, in the footers
/// read of its files, and how many row groups those files' bytes hold.
#[derive(Debug, Default, Clone, PartialEq)]
struct ColumnBytes {
    by_name: HashMap<String, u64>,
    total: u64,
    /// Row groups, rows and bytes of the files read.
    row_groups: u64,
    rows: u64,
    file_bytes: u64,
}

impl ColumnBytes {
    /// The bytes of each top-level column of a file of `size` bytes, from
    /// its footer.
    fn of(metadata: &ParquetMetaData, size: u64) -> Self {
        let schema = metadata.file_metadata().schema_descr();
        let mut bytes = Self {
            row_groups: metadata.num_row_groups() as u64,
            rows: metadata.file_metadata().num_rows().max(0) as u64,
            file_bytes: size,
            ..Self::default()
        };
        for group in metadata.row_groups() {
            for (i, column) in group.columns().iter().enumerate() {
                let size = column.compressed_size().max(0) as u64;
                let root = schema.get_column_root(i).name().to_string();
                *bytes.by_name.entry(root).or_default() += size;
                bytes.total += size;
            }
        }
        bytes
    }

    fn add(&mut self, other: ColumnBytes) {
        for (name, size) in other.by_name {
            *self.by_name.entry(name).or_default() += size;
        }
        self.total += other.total;
        self.row_groups += other.row_groups;
        self.rows += other.rows;
        self.file_bytes += other.file_bytes;
    }

    /// The reads of a piece of `bytes` of a file, scanning `columns`
    /// columns: its footer, and a range per column of each row group it
    /// holds (at least one), at the row groups a byte of the files read.
    fn requests(&self, bytes: u64, columns: usize) -> u64 {
        let groups = match self.file_bytes {
            0 => 1,
            all => (bytes as f64 * self.row_groups as f64 / all as f64).round() as u64,
        };
        1 + groups.max(1) * columns.max(1) as u64
    }

    /// The share of the bytes the columns `names` hold, at least
    /// [`MIN_SHARE`]; all of them where nothing was read.
    fn share<'a>(&self, names: impl Iterator<Item = &'a str>) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        let read: u64 = names.filter_map(|n| self.by_name.get(n)).sum();
        (read as f64 / self.total as f64).clamp(MIN_SHARE, 1.0)
    }
}

/// A Parquet file whose footer is read: its table's name and index, its
/// store, the file.
type FooterFile = (String, usize, Arc<dyn ObjectStore + 'static>, ObjectMeta);

/// What reading one file's footer gives: its location, ranges, table and
/// the bytes of its columns.
type FooterFacts = (String, Vec<Range<u64>>, usize, ColumnBytes);

/// Reading one file's footer.
type FooterRead = std::pin::Pin<Box<dyn std::future::Future<Output = Result<FooterFacts>> + Send>>;

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
        let mut read: Vec<FooterFile> = Vec::new();
        let mut table_of = HashMap::new();
        let parquet = tables.iter().filter(|t| t.format == TableFormat::Parquet);
        for (index, table) in parquet.enumerate() {
            let store = store_for(table)?;
            for file in sampled(&table.files, target_bytes) {
                read.push((table.spec.name.clone(), index, store.clone(), file.clone()));
            }
            for file in &table.files {
                table_of.insert(file.location.to_string(), index);
            }
        }
        let mut columns =
            vec![ColumnBytes::default(); table_of.values().max().map_or(0, |m| m + 1)];
        // Boxed futures over owned items, built before the first await: a stream
        // that keeps a closure across awaits makes the job future not provably
        // `Send` (rustc cannot generalise the closure's lifetimes).
        let reads: Vec<FooterRead> = read
            .into_iter()
            .map(|(table, index, store, file)| {
                let footers = footers.clone();
                Box::pin(async move {
                    let (split, bytes) = split_parquet(&store, &footers, &file, target_bytes)
                        .await
                        .map_err(|e| SquallError::Table {
                            table,
                            message: format!("cannot read the footer of {}: {e}", file.location),
                        })?;
                    Ok::<_, SquallError>((file.location.to_string(), split, index, bytes))
                }) as FooterRead
            })
            .collect();
        let mut reads = futures::stream::iter(reads).buffer_unordered(FOOTER_READS);
        let mut ranges = HashMap::new();
        while let Some(read) = reads.next().await {
            let (location, split, index, bytes) = read?;
            if split.len() > 1 {
                ranges.insert(location, split);
            }
            if let Some(table) = columns.get_mut(index) {
                table.add(bytes);
            }
        }
        Ok(Self {
            ranges,
            target_bytes,
            min_groups: min_tasks,
            min_group_bytes: min_task_bytes,
            columns,
            table_of,
        })
    }

    /// The columns of the table `config` scans, as the footers read tell
    /// (None: not Parquet, or no footer read).
    fn table(&self, config: &FileScanConfig) -> Option<&ColumnBytes> {
        let first = config.file_groups.iter().flat_map(|g| g.iter()).next()?;
        let index = self.table_of.get(first.object_meta.location.as_ref())?;
        self.columns.get(*index)
    }

    /// How a scan's pieces are weighed: the share of its files' bytes it
    /// reads (of its table's columns' bytes, those of the columns it
    /// projects) and its reads; all of a file's bytes and none counted
    /// where not known (not Parquet, no projection, no footer read).
    fn weight(&self, config: &FileScanConfig) -> Weight<'_> {
        let unknown = Weight {
            share: 1.0,
            reads: None,
            target: self.target_bytes,
        };
        let (Some(table), Some(projection)) = (self.table(config), config.file_source.projection())
        else {
            return unknown;
        };
        let schema = config.file_schema();
        let fields = schema.fields();
        let names = projection
            .column_indices()
            .into_iter()
            .filter_map(|i| fields.get(i).map(|f| f.name().as_str()))
            .collect::<Vec<_>>();
        Weight {
            share: table.share(names.iter().copied()),
            reads: Some((table, names.len())),
            target: self.target_bytes,
        }
    }

    #[cfg(test)]
    fn share(&self, config: &FileScanConfig) -> f64 {
        self.weight(config).share
    }

    /// Rows a row group of the tables the scans in `plan` read holds, in
    /// the footers read (None: no footer read of them).
    pub fn rows_per_group(&self, plan: &Arc<dyn ExecutionPlan>) -> Option<f64> {
        let (rows, groups) = file_scans(plan)
            .into_iter()
            .filter_map(|config| self.table(config))
            .fold((0u64, 0u64), |(r, g), t| (r + t.rows, g + t.row_groups));
        (groups > 0).then(|| rows as f64 / groups as f64)
    }

    /// The bytes the scans in `plan` read: their files' (or ranges') bytes,
    /// weighed by the share the columns they read hold (what they are cut
    /// by, but for the reads cap, which depends on how the files are laid
    /// out in row groups).
    pub fn read_bytes(&self, plan: &Arc<dyn ExecutionPlan>) -> u64 {
        file_scans(plan)
            .into_iter()
            .map(|config| {
                let weight = self.weight(config);
                config
                    .file_groups
                    .iter()
                    .flat_map(|group| group.iter())
                    .map(|file| weight.read(piece_bytes(file)))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Regroups a scan's files: large Parquet files become one piece per split,
    /// then pieces are packed into groups of about `target_bytes`, one group per
    /// task — but never fewer groups than `min_groups` (or pieces), so that small
    /// tables still spread over the executors.
    fn regroup(&self, config: &FileScanConfig) -> Vec<FileGroup> {
        let weight = self.weight(config);
        let mut pieces: Vec<(PartitionedFile, u64)> = Vec::new();
        for file in config.file_groups.iter().flat_map(|g| g.iter()) {
            match (
                file.range.is_none(),
                self.ranges.get(file.object_meta.location.as_ref()),
            ) {
                (true, Some(ranges)) => {
                    for r in ranges {
                        let piece = file.clone().with_range(r.start as i64, r.end as i64);
                        pieces.push((piece, weight.of(r.end - r.start)));
                    }
                }
                _ => pieces.push((file.clone(), weight.of(piece_bytes(file)))),
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

/// The file scans in `plan`, at any depth.
fn file_scans(plan: &Arc<dyn ExecutionPlan>) -> Vec<&FileScanConfig> {
    let mut stack = vec![plan];
    let mut out = Vec::new();
    while let Some(node) = stack.pop() {
        out.extend(scan_config(node));
        stack.extend(node.children());
    }
    out
}

/// The files (or ranges) the scans in `plan` read, how many bytes they hold,
/// and whether every one is in a store on this machine (a local folder or
/// memory), where opening a file costs no request.
pub fn files_scanned(plan: &Arc<dyn ExecutionPlan>) -> (usize, u64, bool) {
    file_scans(plan)
        .into_iter()
        .fold((0, 0, true), |(files, bytes, local), config| {
            let pieces: Vec<_> = config.file_groups.iter().flat_map(|g| g.iter()).collect();
            let scheme = config.object_store_url.as_str().split(':').next();
            (
                files + pieces.len(),
                bytes + pieces.into_iter().map(piece_bytes).sum::<u64>(),
                local && scheme.is_some_and(local_scheme),
            )
        })
}

/// The bytes of a file, or of its range.
fn piece_bytes(file: &PartitionedFile) -> u64 {
    match &file.range {
        Some(r) => (r.end - r.start).max(0) as u64,
        None => file.object_meta.size,
    }
}

/// How a scan's pieces are weighed (see [`ScanSplits::weight`]).
struct Weight<'a> {
    /// The share of a file's bytes the scan reads.
    share: f64,
    /// Its table's columns and row groups, and how many columns it reads.
    reads: Option<(&'a ColumnBytes, usize)>,
    /// Bytes of a task.
    target: u64,
}

impl Weight<'_> {
    /// The bytes a task reads of a piece of `bytes` of a file.
    fn read(&self, bytes: u64) -> u64 {
        ((bytes as f64 * self.share).ceil() as u64).clamp(1.min(bytes), bytes)
    }

    /// What a piece of `bytes` of a file weighs: the bytes a task reads of
    /// it, or its share of a task's reads if more.
    fn of(&self, bytes: u64) -> u64 {
        let requests = self.reads.map_or(0, |(table, columns)| {
            let share = table.requests(bytes, columns) as f64 / MAX_SCAN_REQUESTS as f64;
            (share * self.target as f64) as u64
        });
        self.read(bytes).max(requests)
    }
}

/// The files of a Parquet table whose footers are read: every one larger
/// than `target_bytes` (it is split), and up to [`SHARE_SAMPLES`] in all
/// for its columns' shares, the others spread over the listing.
fn sampled(files: &[ObjectMeta], target_bytes: u64) -> Vec<&ObjectMeta> {
    let large = files.iter().filter(|f| f.size > target_bytes);
    let mut out: Vec<&ObjectMeta> = large.collect();
    let small: Vec<&ObjectMeta> = files.iter().filter(|f| f.size <= target_bytes).collect();
    let wanted = SHARE_SAMPLES.saturating_sub(out.len()).min(small.len());
    for k in 0..wanted {
        out.push(small[k * small.len() / wanted]);
    }
    out
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
/// `target_bytes` of row groups, and the bytes of its columns. DataFusion
/// reads a row group in the range that holds the offset of its first page,
/// so the ranges cover every group once.
async fn split_parquet(
    store: &Arc<dyn ObjectStore>,
    footers: &Arc<FileMetadataCache>,
    file: &ObjectMeta,
    target_bytes: u64,
) -> DfResult<(Vec<Range<u64>>, ColumnBytes)> {
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
    Ok((ranges, ColumnBytes::of(&metadata, file.size)))
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
            let Some(config) = scan_config(&node) else {
                return Ok(Transformed::no(node));
            };
            let groups = self.splits.regroup(config);
            if groups.is_empty() {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(regrouped(config, groups)))
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
    use datafusion::datasource::physical_plan::FileScanConfigBuilder;
    use datafusion::datasource::source::DataSourceExec;

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

    /// A scan of eight files of 500 bytes of a table of columns a, b and c
    /// (of 300, 100 and 600 bytes a thousand), reading `columns`, and the
    /// splits that know the table's columns.
    fn weighed(columns: Option<Vec<usize>>) -> (ScanSplits, FileScanConfig) {
        weighed_in(columns, 8)
    }

    /// [`weighed`] with the eight files holding `row_groups` in all.
    fn weighed_in(columns: Option<Vec<usize>>, row_groups: u64) -> (ScanSplits, FileScanConfig) {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::datasource::physical_plan::ParquetSource;
        use datafusion::execution::object_store::ObjectStoreUrl;
        let schema = Arc::new(Schema::new(
            ["a", "b", "c"]
                .map(|n| Field::new(n, DataType::Int64, false))
                .to_vec(),
        ));
        let files: Vec<PartitionedFile> = (0..8)
            .map(|i| PartitionedFile::new(format!("t/f{i}"), 500))
            .collect();
        let splits = ScanSplits {
            target_bytes: 1000,
            min_groups: 1,
            columns: vec![ColumnBytes {
                by_name: [("a", 300), ("b", 100), ("c", 600)]
                    .map(|(n, b)| (n.to_string(), b))
                    .into(),
                total: 1000,
                row_groups,
                rows: 800,
                file_bytes: 4000,
            }],
            table_of: files
                .iter()
                .map(|f| (f.object_meta.location.to_string(), 0))
                .collect(),
            ..ScanSplits::default()
        };
        let source = Arc::new(ParquetSource::new(schema));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_file_groups(vec![FileGroup::new(files)])
            .with_projection_indices(columns)
            .unwrap()
            .build();
        (splits, config)
    }

    #[test]
    fn a_scan_is_weighed_by_the_share_of_the_columns_it_reads() {
        let (splits, narrow) = weighed(Some(vec![1]));
        assert!((splits.share(&narrow) - 0.1).abs() < 1e-9);
        // 4,000 bytes of files, 400 of column b: one task of all eight.
        assert_eq!(shape(&splits.regroup(&narrow)), vec![8]);
        let plan = DataSourceExec::from_data_source(narrow) as Arc<dyn ExecutionPlan>;
        assert_eq!(splits.read_bytes(&plan), 400);
        // a and c are 90%: 3,600 bytes, four tasks.
        let (splits, wide) = weighed(Some(vec![0, 2]));
        assert_eq!(shape(&splits.regroup(&wide)), vec![2, 2, 2, 2]);
        // No projection: all of the files.
        let (splits, all) = weighed(None);
        assert_eq!(splits.share(&all), 1.0);
        // No column read (a count): the least share.
        let (splits, none) = weighed(Some(vec![]));
        assert_eq!(splits.share(&none), MIN_SHARE);
        // A table no footer was read of: all of the files.
        let unknown = ScanSplits {
            columns: vec![],
            ..splits
        };
        assert_eq!(unknown.share(&none), 1.0);
    }

    #[test]
    fn a_scan_of_files_of_many_row_groups_is_cut_by_its_reads() {
        // Ten row groups a file: column b of one file is a footer and ten
        // ranges, 11 of a task's 48 reads — it weighs 229 bytes of a task's
        // 1,000, not the 50 it reads. Four files a task: 44 reads.
        let (splits, narrow) = weighed_in(Some(vec![1]), 80);
        assert_eq!(shape(&splits.regroup(&narrow)), vec![4, 4]);
        let plan = DataSourceExec::from_data_source(narrow) as Arc<dyn ExecutionPlan>;
        assert_eq!(splits.read_bytes(&plan), 400);
        assert_eq!(splits.rows_per_group(&plan), Some(10.0));
        // Columns a and c: 450 bytes of each file read, more than its 21
        // reads weigh (437).
        let (splits, wide) = weighed_in(Some(vec![0, 2]), 80);
        assert_eq!(shape(&splits.regroup(&wide)), vec![2, 2, 2, 2]);
    }

    #[test]
    fn scans_count_their_files_bytes_and_ranges() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::datasource::physical_plan::ParquetSource;
        use datafusion::execution::object_store::ObjectStoreUrl;
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let scan = |groups: Vec<Vec<PartitionedFile>>| -> Arc<dyn ExecutionPlan> {
            let source = Arc::new(ParquetSource::new(schema.clone()));
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                .build();
            DataSourceExec::from_data_source(config)
        };
        let whole = scan(vec![
            vec![
                PartitionedFile::new("a", 1000),
                PartitionedFile::new("b", 500),
            ],
            vec![PartitionedFile::new("c", 250)],
        ]);
        let splits = ScanSplits::default();
        assert_eq!(splits.read_bytes(&whole), 1750);
        // A split file counts its range; scans under other operators count.
        let split = scan(vec![vec![PartitionedFile::new_with_range(
            "d".into(),
            4000,
            1000,
            1600,
        )]]);
        let join = Arc::new(datafusion::physical_plan::joins::CrossJoinExec::new(
            whole, split,
        ));
        assert_eq!(splits.read_bytes(&(join as Arc<dyn ExecutionPlan>)), 2350);
    }

    #[test]
    fn footers_are_sampled_over_the_listing() {
        let files: Vec<ObjectMeta> = [10, 2000, 10, 10, 10, 10, 10, 10, 10, 10]
            .iter()
            .enumerate()
            .map(|(i, &size)| ObjectMeta {
                location: format!("f{i}").into(),
                last_modified: Default::default(),
                size,
                e_tag: None,
                version: None,
            })
            .collect();
        let names = |target| -> Vec<String> {
            sampled(&files, target)
                .iter()
                .map(|f| f.location.to_string())
                .collect()
        };
        // The large file (split), and three more spread over the others.
        assert_eq!(names(1000), ["f1", "f0", "f4", "f7"]);
        // None large: four spread over all.
        assert_eq!(names(5000), ["f0", "f2", "f5", "f7"]);
        assert!(sampled(&[], 10).is_empty());
    }
}
