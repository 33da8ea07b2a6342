//! Compressed CSV and JSON scans across a plan's encoding.
//!
//! datafusion-proto leaves a file scan's whole-file compression out of its
//! messages (a `.csv.gz` scan decodes as an uncompressed one, and reads
//! gzip bytes as text). [`mark`] puts a [`CompressedScanExec`] above every
//! compressed scan of a plan about to be encoded, which Squall's codec
//! writes with the compression's name; decoding it gives back the scan with
//! its compression ([`restore`]). The node exists only between the two: it
//! is never planned, optimized or run.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

/// A compressed file scan, as its plan travels.
#[derive(Debug)]
pub struct CompressedScanExec {
    compression: FileCompressionType,
    input: Arc<dyn ExecutionPlan>,
}

impl CompressedScanExec {
    pub fn compression(&self) -> FileCompressionType {
        self.compression
    }
}

fn file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// `plan` with a [`CompressedScanExec`] above each compressed file scan.
pub fn mark(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let compression = match file_scan(&node) {
            Some(config) if config.file_compression_type.is_compressed() => {
                config.file_compression_type
            }
            _ => return Ok(Transformed::no(node)),
        };
        let marked = CompressedScanExec {
            compression,
            input: node,
        };
        Ok(Transformed::yes(Arc::new(marked) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// The scan `input` read with `compression` again.
pub fn restore(
    compression: FileCompressionType,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(config) = file_scan(&input) else {
        return internal_err!("a compressed scan's input is not a file scan");
    };
    let config = FileScanConfigBuilder::from(config.clone())
        .with_file_compression_type(compression)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// The name a compression travels as, and back.
pub fn compression_name(compression: FileCompressionType) -> String {
    use datafusion::common::parsers::CompressionTypeVariant::*;
    match compression.get_variant() {
        GZIP => "gzip",
        BZIP2 => "bzip2",
        XZ => "xz",
        ZSTD => "zstd",
        UNCOMPRESSED => "none",
    }
    .to_string()
}

pub fn compression_named(name: &str) -> Result<FileCompressionType> {
    name.parse()
}

impl DisplayAs for CompressedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "CompressedScanExec: {}",
            compression_name(self.compression)
        )
    }
}

impl ExecutionPlan for CompressedScanExec {
    fn name(&self) -> &str {
        "CompressedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(CompressedScanExec {
                compression: self.compression,
                input,
            })),
            Err(_) => internal_err!("CompressedScanExec takes exactly one child"),
        }
    }

    /// Never run: decoding puts the scan back (see the module's comment).
    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        internal_err!("CompressedScanExec only travels; it is not run")
    }
}
