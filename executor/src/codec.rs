//! `SquallCodec`: the datafusion-proto extension codec for Squall's plan nodes
//! (shuffle writer and reader, result writer), and the plan encode/decode helpers.
//!
//! A node is encoded as a small JSON document; the expressions and schemas inside
//! it use datafusion-proto's own protobuf messages. When a task decodes its plan,
//! the codec binds every shuffle reader to the committed outputs in the TaskSpec.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::{
    DeduplicatingProtoConverter, PhysicalExtensionCodec, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::compressed::{self, CompressedScanExec};
use crate::keys::{KeyFilter, KeyFilterExec, KeySet};
use crate::protocol::{KeyBounds, StageInput, base64_bytes};
use crate::result_writer::ResultWriterExec;
use crate::shuffle::reader::{ReadMode, ShuffleReaderExec};
use crate::shuffle::writer::{ShuffleOutput, ShuffleWriterExec};

/// Codec for Squall's nodes. `inputs` binds readers when a task decodes its plan.
#[derive(Debug, Default)]
pub struct SquallCodec {
    inputs: HashMap<u32, Arc<StageInput>>,
}

impl SquallCodec {
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec that binds readers of these stages to their committed outputs.
    pub fn with_inputs(inputs: impl IntoIterator<Item = StageInput>) -> Self {
        Self {
            inputs: inputs
                .into_iter()
                .map(|i| (i.stage_id, Arc::new(i)))
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "node", rename_all = "snake_case")]
enum SquallNode {
    ShuffleWriter {
        stage_dir: String,
        /// protobuf `PhysicalExprNode`s; empty with `partitions == 1` means single.
        hash_exprs: Vec<Vec<u8>>,
        partitions: usize,
        /// Each set of keys it summarises.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        summarise: Vec<KeySetNode>,
    },
    KeyFilter {
        /// protobuf `PhysicalExprNode`s.
        keys: Vec<Vec<u8>>,
        build_stage: u32,
        build_rows: u64,
        distinct_keys: u64,
        bounds: Vec<Option<KeyBounds>>,
        #[serde(with = "base64_bytes", default)]
        bloom: Vec<u8>,
    },
    ShuffleReader {
        stage_id: u32,
        /// protobuf `Schema`.
        schema: Vec<u8>,
        by_producer: bool,
        partitions: usize,
    },
    ResultWriter {
        output_dir: String,
    },
    /// A whole-file compressed scan (its child), which datafusion-proto
    /// decodes as uncompressed (see `compressed`).
    CompressedScan {
        compression: String,
    },
}

impl SquallCodec {
    fn encode_exprs(&self, exprs: &[Arc<dyn PhysicalExpr>]) -> Result<Vec<Vec<u8>>> {
        exprs
            .iter()
            .map(|e| Ok(serialize_physical_expr(e, self)?.encode_to_vec()))
            .collect()
    }

    /// Decodes expressions over `input`'s schema.
    fn exprs(
        &self,
        encoded: &[Vec<u8>],
        input: &Arc<dyn ExecutionPlan>,
        ctx: &TaskContext,
    ) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        let schema = input.schema();
        encoded
            .iter()
            .map(|bytes| {
                let node =
                    protobuf::PhysicalExprNode::decode(bytes.as_slice()).map_err(codec_err)?;
                parse_physical_expr(&node, ctx, &schema, self)
            })
            .collect()
    }
}

/// A set of keys a shuffle writer summarises (see [`KeySet`]).
#[derive(Serialize, Deserialize)]
struct KeySetNode {
    /// protobuf `PhysicalExprNode`s.
    keys: Vec<Vec<u8>>,
    bloom_blocks: usize,
}

fn codec_err(what: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("Squall plan codec: {what}"))
}

impl PhysicalExtensionCodec for SquallCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node: SquallNode = serde_json::from_slice(buf).map_err(codec_err)?;
        let only_input = || match inputs {
            [input] => Ok(input.clone()),
            _ => Err(codec_err(format!(
                "expected one input, got {}",
                inputs.len()
            ))),
        };
        match node {
            SquallNode::ShuffleWriter {
                stage_dir,
                hash_exprs,
                partitions,
                summarise,
            } => {
                let input = only_input()?;
                let output = if hash_exprs.is_empty() {
                    ShuffleOutput::Single
                } else {
                    let exprs = self.exprs(&hash_exprs, &input, ctx)?;
                    ShuffleOutput::Hash(exprs, partitions)
                };
                let summarise = summarise
                    .iter()
                    .map(|set| {
                        Ok(KeySet {
                            keys: self.exprs(&set.keys, &input, ctx)?,
                            bloom_blocks: set.bloom_blocks,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let writer = ShuffleWriterExec::new(input, output, stage_dir);
                Ok(Arc::new(writer.summarising(summarise)))
            }
            SquallNode::KeyFilter {
                keys,
                build_stage,
                build_rows,
                distinct_keys,
                bounds,
                bloom,
            } => {
                let input = only_input()?;
                let keys = self.exprs(&keys, &input, ctx)?;
                let filter = KeyFilter::from_wire(build_rows, distinct_keys, &bounds, &bloom)?;
                Ok(Arc::new(KeyFilterExec::new(
                    input,
                    keys,
                    Arc::new(filter),
                    build_stage,
                )))
            }
            SquallNode::ShuffleReader {
                stage_id,
                schema,
                by_producer,
                partitions,
            } => {
                let proto = protobuf::Schema::decode(schema.as_slice()).map_err(codec_err)?;
                let schema = Arc::new(Schema::try_from(&proto)?);
                let mode = if by_producer {
                    ReadMode::ByProducer
                } else {
                    ReadMode::Partitioned
                };
                let reader = ShuffleReaderExec::new(stage_id, schema, mode, partitions);
                let reader = match self.inputs.get(&stage_id) {
                    Some(input) => reader.bind(input.clone())?,
                    None => reader,
                };
                Ok(Arc::new(reader))
            }
            SquallNode::CompressedScan { compression } => {
                compressed::restore(compressed::compression_named(&compression)?, only_input()?)
            }
            SquallNode::ResultWriter { output_dir } => {
                Ok(Arc::new(ResultWriterExec::new(only_input()?, output_dir)))
            }
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let encoded = if let Some(writer) = node.downcast_ref::<ShuffleWriterExec>() {
            let (hash_exprs, partitions) = match writer.output() {
                ShuffleOutput::Hash(exprs, n) => (self.encode_exprs(exprs)?, *n),
                ShuffleOutput::Single => (vec![], 1),
            };
            SquallNode::ShuffleWriter {
                stage_dir: writer.dir().to_string(),
                hash_exprs,
                partitions,
                summarise: writer
                    .summarised()
                    .iter()
                    .map(|set| {
                        Ok(KeySetNode {
                            keys: self.encode_exprs(&set.keys)?,
                            bloom_blocks: set.bloom_blocks,
                        })
                    })
                    .collect::<Result<_>>()?,
            }
        } else if let Some(filter) = node.downcast_ref::<KeyFilterExec>() {
            let keys = self.encode_exprs(filter.keys())?;
            let held = filter.filter();
            SquallNode::KeyFilter {
                keys,
                build_stage: filter.build_stage(),
                build_rows: held.build_rows,
                distinct_keys: held.distinct_keys,
                bounds: held.wire_bounds()?,
                bloom: held
                    .bloom
                    .as_ref()
                    .map(|b| b.to_bytes())
                    .unwrap_or_default(),
            }
        } else if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            let schema = protobuf::Schema::try_from(reader.schema().as_ref())?;
            SquallNode::ShuffleReader {
                stage_id: reader.stage_id(),
                schema: schema.encode_to_vec(),
                by_producer: reader.mode() == ReadMode::ByProducer,
                partitions: reader.partitions(),
            }
        } else if let Some(scan) = node.downcast_ref::<CompressedScanExec>() {
            SquallNode::CompressedScan {
                compression: compressed::compression_name(scan.compression()),
            }
        } else if let Some(writer) = node.downcast_ref::<ResultWriterExec>() {
            SquallNode::ResultWriter {
                output_dir: writer.dir().to_string(),
            }
        } else {
            return internal_err!("Squall plan codec cannot encode {}", node.name());
        };
        serde_json::to_writer(buf, &encoded).map_err(codec_err)
    }
}

/// Encodes a stage plan for a TaskSpec (a compressed scan marked as such,
/// see `compressed`). An expression the plan holds in two
/// places — a TopK's dynamic filter, in its sort and in the scan it prunes —
/// is one expression again when decoded, so what the sort learns reaches the
/// scan.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    let plan = compressed::mark(plan)?;
    let converter = DeduplicatingProtoConverter {};
    Ok(
        physical_plan_to_bytes_with_proto_converter(plan, &SquallCodec::new(), &converter)?
            .to_vec(),
    )
}

/// Decodes a stage plan, binding its readers to `inputs`.
pub fn decode_plan(
    bytes: &[u8],
    ctx: &TaskContext,
    inputs: impl IntoIterator<Item = StageInput>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let codec = SquallCodec::with_inputs(inputs);
    physical_plan_from_bytes_with_proto_converter(
        bytes,
        ctx,
        &codec,
        &DeduplicatingProtoConverter {},
    )
}
