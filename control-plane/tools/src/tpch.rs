//! TPC-H data and queries.
//!
//! `generate` writes the eight tables as Parquet with the tpchgen crates, one folder
//! per table with `parts` files each (`<out>/<table>/<table>.<n>.parquet`). Nation
//! and region do not depend on the part number in the generator; Squall still
//! splits their rows over `parts` files so every scan stage has several tasks.
//! The 22 queries (from DuckDB's repository, MIT licence) are embedded.

pub mod answers;

use arrow::array::{RecordBatch, RecordBatchReader};
use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use squall_executor::{ObjectUrl, StoreRegistry};
use std::collections::BTreeMap;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use squall_engine::error::{Result, SquallError};
use squall_engine::tables::TableSpec;
use squall_engine::urls::to_url;

pub const TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

const QUERIES: [&str; 22] = [
    include_str!("tpch/queries/q01.sql"),
    include_str!("tpch/queries/q02.sql"),
    include_str!("tpch/queries/q03.sql"),
    include_str!("tpch/queries/q04.sql"),
    include_str!("tpch/queries/q05.sql"),
    include_str!("tpch/queries/q06.sql"),
    include_str!("tpch/queries/q07.sql"),
    include_str!("tpch/queries/q08.sql"),
    include_str!("tpch/queries/q09.sql"),
    include_str!("tpch/queries/q10.sql"),
    include_str!("tpch/queries/q11.sql"),
    include_str!("tpch/queries/q12.sql"),
    include_str!("tpch/queries/q13.sql"),
    include_str!("tpch/queries/q14.sql"),
    include_str!("tpch/queries/q15.sql"),
    include_str!("tpch/queries/q16.sql"),
    include_str!("tpch/queries/q17.sql"),
    include_str!("tpch/queries/q18.sql"),
    include_str!("tpch/queries/q19.sql"),
    include_str!("tpch/queries/q20.sql"),
    include_str!("tpch/queries/q21.sql"),
    include_str!("tpch/queries/q22.sql"),
];

/// TPC-H query `n` (1 to 22).
pub fn query(n: usize) -> Result<&'static str> {
    n.checked_sub(1)
        .and_then(|i| QUERIES.get(i))
        .copied()
        .ok_or_else(|| SquallError::InvalidArgument(format!("there is no TPC-H query {n} (1-22)")))
}

/// The eight tables under `root` (as `generate` lays them out).
pub fn table_specs(root: &str) -> Vec<TableSpec> {
    let root = root.trim_end_matches('/');
    TABLES
        .iter()
        .map(|t| TableSpec::new(*t, format!("{root}/{t}/")))
        .collect()
}

/// Single-node DataFusion (the reference Squall is measured and checked against)
/// with the eight tables under `root` registered, `target_partitions` wide.
pub async fn single_node_context(root: &str, target_partitions: usize) -> Result<SessionContext> {
    let root = root.trim_end_matches('/');
    let config = SessionConfig::new().with_target_partitions(target_partitions.max(1));
    let ctx = SessionContext::new_with_config(config);
    for table in TABLES {
        ctx.register_parquet(
            table,
            format!("{root}/{table}/"),
            ParquetReadOptions::default(),
        )
        .await
        .map_err(|e| SquallError::Table {
            table: table.to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(ctx)
}

/// Runs `sql` on a single-node context (see [`single_node_context`]) and
/// collects its batches.
pub async fn single_node_collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(single_node_profile(ctx, sql).await?.0)
}

/// [`single_node_collect`], with the CPU microseconds its operators
/// measured, by operator name (as a stage's tasks report them).
pub async fn single_node_profile(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(Vec<RecordBatch>, BTreeMap<String, u64>)> {
    let plan = ctx
        .sql(sql)
        .await
        .map_err(SquallError::from_planning)?
        .create_physical_plan()
        .await
        .map_err(SquallError::from_planning)?;
    let batches = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
        .await
        .map_err(|source| SquallError::Internal { source })?;
    Ok((batches, squall_executor::run::cpu_by_operator(&plan)))
}

/// `batches` of `schema` as one Parquet file, in memory (the generators'
/// encoder).
pub(crate) fn parquet_bytes(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
) -> parquet::errors::Result<Bytes> {
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, schema.clone(), Some(props))?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(Bytes::from(buffer))
}

/// Writes the eight TPC-H tables at `scale` under `out`, `parts` files per table.
/// `on_file` is called after each file is written.
pub async fn generate(
    stores: &StoreRegistry,
    scale: f64,
    out: &str,
    parts: usize,
    on_file: impl Fn(&str) + Send + Sync,
) -> Result<()> {
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(SquallError::InvalidArgument(format!(
            "scale factor must be a positive number, not {scale}"
        )));
    }
    if parts == 0 || parts > 100_000 {
        return Err(SquallError::InvalidArgument(format!(
            "parts must be between 1 and 100000, not {parts}"
        )));
    }
    let root = to_url(out)?;
    let root = root.as_str().trim_end_matches('/').to_string();
    let store = {
        let target = ObjectUrl::parse(&root)
            .map_err(|e| SquallError::InvalidArgument(format!("--out: {e}")))?;
        stores
            .get_store(target.store_url().as_ref())
            .map_err(|e| SquallError::InvalidArgument(format!("--out: {e}")))?
    };
    let jobs: Vec<(&'static str, usize)> = TABLES
        .iter()
        .flat_map(|t| (1..=parts).map(move |p| (*t, p)))
        .collect();
    let parallelism = squall_engine::planner::default_parallelism();
    let mut writes = futures::stream::iter(jobs)
        .map(|(table, part)| {
            let store = store.clone();
            let url = format!("{root}/{table}/{table}.{part}.parquet");
            async move {
                let encoded =
                    tokio::task::spawn_blocking(move || encode_part(table, scale, part, parts))
                        .await
                        .map_err(|source| SquallError::Crashed {
                            what: "the TPC-H generator",
                            source,
                        })??;
                let target =
                    ObjectUrl::parse(&url).map_err(|source| SquallError::Internal { source })?;
                store.put(target.path(), PutPayload::from(encoded)).await?;
                Ok::<_, SquallError>(url)
            }
        })
        .buffer_unordered(parallelism);
    while let Some(done) = writes.next().await {
        on_file(&done?);
    }
    Ok(())
}

/// Generates part `part` (1-based) of `parts` of `table` as a Parquet file.
fn encode_part(table: &str, scale: f64, part: usize, parts: usize) -> Result<Bytes> {
    let (p, n) = (part as i32, parts as i32);
    let reader: Box<dyn RecordBatchReader + Send> = match table {
        "nation" => Box::new(NationArrow::new(NationGenerator::new(scale, 1, 1))),
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(scale, 1, 1))),
        "part" => Box::new(PartArrow::new(PartGenerator::new(scale, p, n))),
        "supplier" => Box::new(SupplierArrow::new(SupplierGenerator::new(scale, p, n))),
        "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(scale, p, n))),
        "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(scale, p, n))),
        "orders" => Box::new(OrderArrow::new(OrderGenerator::new(scale, p, n))),
        "lineitem" => Box::new(LineItemArrow::new(LineItemGenerator::new(scale, p, n))),
        other => {
            return Err(SquallError::InvalidArgument(format!(
                "unknown TPC-H table {other}"
            )));
        }
    };
    let schema = reader.schema();
    let generated = |source| SquallError::TpchGenerate {
        table: table.to_string(),
        source,
    };
    let batches: Vec<RecordBatch> = reader
        .collect::<std::result::Result<_, _>>()
        .map_err(generated)?;
    // The generator does not part nation and region: give each file a slice of rows.
    let batches = if matches!(table, "nation" | "region") {
        let all = arrow::compute::concat_batches(&schema, &batches).map_err(generated)?;
        let rows = all.num_rows();
        let (start, end) = ((part - 1) * rows / parts, part * rows / parts);
        vec![all.slice(start, end - start)]
    } else {
        batches
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    parquet_bytes(&schema, &batches, props).map_err(|source| SquallError::TpchEncode {
        table: table.to_string(),
        part,
        source,
    })
}

/// Whether TPC-H data for every table seems to be at `root` (a local folder).
pub fn local_data_present(root: &std::path::Path) -> bool {
    TABLES.iter().all(|t| {
        std::fs::read_dir(root.join(t))
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            })
            .unwrap_or(false)
    })
}
