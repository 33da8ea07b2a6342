//! A page of a succeeded job's rows (`GET /v1/jobs/{id}/result`): only the
//! files that hold the page are opened, and of those only the row groups (and,
//! with the page index, the pages) that hold its rows are read and decoded.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use squall_executor::StoreRegistry;

use crate::api::{ColumnView, JobOutcome, JobState, ResultPage};
use crate::core::Service;
use crate::errors::ServiceError;
use crate::principals::Principal;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service {
    /// A page of a succeeded job's rows: at most `limit` rows, and no more
    /// than [`Limits::max_page_bytes`](crate::limits::Limits) of them as JSON
    /// (`next_offset` then says where the rest starts). Rows are read a few
    /// at a time, so a page of large values never holds more than one slice
    /// of them beyond the cap.
    pub(crate) async fn result_page(
        &self,
        caller: &Principal,
        id: &str,
        offset: u64,
        limit: usize,
        arrays: bool,
    ) -> Result<ResultPage, ServiceError> {
        let mut outcome = self.outcome(caller, id)?;
        outcome.columns = unique_columns(outcome.columns);
        let names: Vec<String> = outcome.columns.iter().map(|c| c.name.clone()).collect();
        let max_bytes = self.config.limits.max_page_bytes;
        let (first_row, urls) = page_files(&outcome, offset, limit as u64);
        let mut skip = offset.saturating_sub(first_row) as usize;
        let mut rows: Vec<serde_json::Value> = Vec::new();
        let mut bytes = 0usize;
        'files: for url in &urls {
            if rows.len() == limit {
                break;
            }
            let unreadable = |source: BoxError| ServiceError::ResultUnreadable {
                url: url.clone(),
                source,
            };
            let (rows_in_file, mut batches) =
                read_rows(&self.engine.stores, url, skip, limit - rows.len())
                    .await
                    .map_err(unreadable)?;
            skip = skip.saturating_sub(rows_in_file);
            while let Some(batch) = batches.try_next().await.map_err(|e| unreadable(e.into()))? {
                let batch = renamed(&batch, &names).map_err(unreadable)?;
                for (size, row) in json_rows(&batch, arrays).map_err(unreadable)? {
                    if bytes.saturating_add(size) > max_bytes {
                        if rows.is_empty() {
                            return Err(ServiceError::RowTooLarge {
                                id: id.to_string(),
                                row: offset,
                                bytes: size,
                                limit: max_bytes,
                            });
                        }
                        break 'files;
                    }
                    bytes += size;
                    rows.push(row);
                }
            }
        }
        let end = offset + rows.len() as u64;
        let (rows, data) = if arrays {
            (Vec::new(), Some(rows))
        } else {
            let objects = rows
                .into_iter()
                .filter_map(|r| match r {
                    serde_json::Value::Object(o) => Some(o),
                    _ => None,
                })
                .collect();
            (objects, None)
        };
        Ok(ResultPage {
            columns: outcome.columns,
            next_offset: (end < outcome.rows).then_some(end),
            rows,
            data,
            offset,
            total: outcome.rows,
            manifest_url: outcome.manifest_url,
            files: outcome.files,
        })
    }
}

impl Service {
    /// File `index` of a succeeded job's result: its size and its bytes as a
    /// stream. Only the files the job committed can be named.
    pub(crate) async fn result_file(
        &self,
        caller: &Principal,
        id: &str,
        index: usize,
    ) -> Result<
        (
            u64,
            futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
        ),
        ServiceError,
    > {
        let outcome = self.outcome(caller, id)?;
        let url = outcome
            .files
            .get(index)
            .ok_or_else(|| ServiceError::UnknownResultFile {
                id: id.to_string(),
                index,
                files: outcome.files.len(),
            })?;
        let unreadable = |source: BoxError| ServiceError::ResultUnreadable {
            url: url.clone(),
            source,
        };
        let (store, path) = self
            .engine
            .stores
            .resolve(url)
            .map_err(|e| unreadable(e.into()))?;
        let got = store.get(&path).await.map_err(|e| unreadable(e.into()))?;
        Ok((got.meta.size, got.into_stream()))
    }

    /// A succeeded job's recorded outcome, if `caller` may see the job.
    fn outcome(&self, caller: &Principal, id: &str) -> Result<JobOutcome, ServiceError> {
        let job = self.owned_job(caller, id)?;
        if job.state != JobState::Succeeded {
            return Err(ServiceError::NoResult {
                id: id.to_string(),
                state: job.state,
            });
        }
        self.store
            .result(id)?
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| ServiceError::ResultMissing { id: id.to_string() })
    }
}

/// What a whole result is downloaded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Download {
    /// CSV text: a header row, then the rows.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

/// Rows read at a time for a download.
const DOWNLOAD_BATCH_ROWS: usize = 8192;

impl Service {
    /// A succeeded job's rows from `offset` (at most `limit`) as one CSV text
    /// or Arrow IPC stream, read a file and a batch at a time (nothing but a
    /// batch is held, however large the result). Column names are made
    /// unique as in pages.
    pub(crate) fn result_download(
        &self,
        caller: &Principal,
        id: &str,
        offset: u64,
        limit: Option<u64>,
        kind: Download,
    ) -> Result<BoxStream<'static, Result<Bytes, BoxError>>, ServiceError> {
        let (schema, batches) = self.result_rows(caller, id, offset, limit)?;
        let encoder = Encoder::new(kind, schema)?;
        let encoded = futures::stream::try_unfold(
            (batches, encoder, false),
            |(mut batches, mut encoder, done)| async move {
                if done {
                    return Ok(None);
                }
                match batches.try_next().await? {
                    Some(batch) => {
                        let bytes = encoder.batch(&batch)?;
                        Ok(Some((bytes, (batches, encoder, false))))
                    }
                    None => {
                        let bytes = encoder.finish()?;
                        Ok(Some((bytes, (batches, encoder, true))))
                    }
                }
            },
        );
        Ok(encoded.boxed())
    }

    /// A succeeded job's whole result: its schema (names made unique) and
    /// its record batches in order, read a file and a batch at a time.
    pub(crate) fn result_batches(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<(arrow::datatypes::SchemaRef, RowStream), ServiceError> {
        self.result_rows(caller, id, 0, None)
    }

    /// Rows `offset..` (at most `limit`) of a succeeded job's result.
    fn result_rows(
        &self,
        caller: &Principal,
        id: &str,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<(arrow::datatypes::SchemaRef, RowStream), ServiceError> {
        let mut outcome = self.outcome(caller, id)?;
        outcome.columns = unique_columns(outcome.columns);
        let names: Vec<String> = outcome.columns.iter().map(|c| c.name.clone()).collect();
        let schema =
            schema_of(&outcome.columns).map_err(|source| ServiceError::ResultUnreadable {
                url: outcome.manifest_url.clone(),
                source,
            })?;
        let limit = limit.unwrap_or(u64::MAX);
        let (first_row, urls) = page_files(&outcome, offset, limit);
        let state = DownloadState {
            stores: self.engine.stores.clone(),
            urls: urls.into(),
            skip: offset.saturating_sub(first_row),
            remaining: limit.min(outcome.rows.saturating_sub(offset)),
            batches: None,
            names,
        };
        Ok((
            schema,
            futures::stream::try_unfold(state, DownloadState::next).boxed(),
        ))
    }
}

/// A result's record batches, in order.
pub(crate) type RowStream = BoxStream<'static, Result<RecordBatch, BoxError>>;

/// The schema `columns` describe.
pub(crate) fn schema_of(columns: &[ColumnView]) -> Result<arrow::datatypes::SchemaRef, BoxError> {
    let fields = columns
        .iter()
        .map(|c| {
            let data_type: arrow::datatypes::DataType = c.data_type.parse()?;
            Ok(arrow::datatypes::Field::new(&c.name, data_type, c.nullable))
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    Ok(Arc::new(arrow::datatypes::Schema::new(fields)))
}

/// Encodes batches as CSV or Arrow IPC, a chunk of bytes each.
enum Encoder {
    /// The schema, and whether the header row was written.
    Csv(arrow::datatypes::SchemaRef, bool),
    Arrow(Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(kind: Download, schema: arrow::datatypes::SchemaRef) -> Result<Self, ServiceError> {
        Ok(match kind {
            Download::Csv => Encoder::Csv(schema, false),
            Download::Arrow => {
                let writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)
                    .map_err(|e| ServiceError::ResultUnreadable {
                        url: "an Arrow stream's schema".into(),
                        source: e.into(),
                    })?;
                Encoder::Arrow(Box::new(writer))
            }
        })
    }

    /// The bytes of `batch` (the CSV header row before the first).
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, BoxError> {
        match self {
            Encoder::Csv(_, header_written) => {
                let mut out = Vec::new();
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(!*header_written)
                    .build(&mut out);
                writer.write(batch)?;
                drop(writer);
                *header_written = true;
                Ok(Bytes::from(out))
            }
            Encoder::Arrow(writer) => {
                writer.write(batch)?;
                Ok(Bytes::from(std::mem::take(writer.get_mut())))
            }
        }
    }

    /// What is left to send once every batch was (of an empty CSV result,
    /// its header row).
    fn finish(&mut self) -> Result<Bytes, BoxError> {
        match self {
            Encoder::Csv(schema, false) => {
                let empty = RecordBatch::new_empty(schema.clone());
                self.batch(&empty)
            }
            Encoder::Csv(_, true) => Ok(Bytes::new()),
            Encoder::Arrow(writer) => {
                writer.finish()?;
                Ok(Bytes::from(std::mem::take(writer.get_mut())))
            }
        }
    }
}

/// Where a result's reading is: the files left, the rows left, the file being read.
struct DownloadState {
    stores: Arc<StoreRegistry>,
    urls: std::collections::VecDeque<String>,
    skip: u64,
    remaining: u64,
    batches: Option<BoxStream<'static, parquet::errors::Result<RecordBatch>>>,
    names: Vec<String>,
}

impl DownloadState {
    async fn next(mut self) -> Result<Option<(RecordBatch, Self)>, BoxError> {
        loop {
            if let Some(batches) = &mut self.batches {
                match batches.try_next().await? {
                    Some(batch) => {
                        let batch = renamed(&batch, &self.names)?;
                        self.remaining = self.remaining.saturating_sub(batch.num_rows() as u64);
                        return Ok(Some((batch, self)));
                    }
                    None => self.batches = None,
                }
            }
            match self.urls.pop_front() {
                Some(url) if self.remaining > 0 => {
                    let take = usize::try_from(self.remaining).unwrap_or(usize::MAX);
                    let skip = usize::try_from(self.skip).unwrap_or(usize::MAX);
                    let (rows, batches) =
                        read_rows_in(&self.stores, &url, skip, take, DOWNLOAD_BATCH_ROWS).await?;
                    self.skip = self.skip.saturating_sub(rows as u64);
                    self.batches = Some(batches);
                }
                _ => return Ok(None),
            }
        }
    }
}

/// Rows read for a page at a time: a page stops at its byte cap within this
/// many rows.
const PAGE_BATCH_ROWS: usize = 64;

/// Rows `skip..skip + take` of the Parquet file at `url`, reading only the row
/// groups (and pages) that hold them, [`PAGE_BATCH_ROWS`] at a time; also the
/// file's row count.
async fn read_rows(
    stores: &StoreRegistry,
    url: &str,
    skip: usize,
    take: usize,
) -> Result<
    (
        usize,
        BoxStream<'static, parquet::errors::Result<RecordBatch>>,
    ),
    BoxError,
> {
    read_rows_in(stores, url, skip, take, PAGE_BATCH_ROWS).await
}

/// [`read_rows`], `batch_rows` at a time.
async fn read_rows_in(
    stores: &StoreRegistry,
    url: &str,
    skip: usize,
    take: usize,
    batch_rows: usize,
) -> Result<
    (
        usize,
        BoxStream<'static, parquet::errors::Result<RecordBatch>>,
    ),
    BoxError,
> {
    let (store, path) = stores.resolve(url)?;
    let size = store.head(&path).await?.size;
    let reader = ResultFile { store, path, size };
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
    let mut start = 0;
    let mut groups = Vec::new();
    let mut first_start = None;
    for (index, group) in builder.metadata().row_groups().iter().enumerate() {
        let rows = group.num_rows().max(0) as usize;
        if start + rows > skip && start < skip.saturating_add(take) {
            first_start.get_or_insert(start);
            groups.push(index);
        }
        start += rows;
    }
    let Some(first_start) = first_start else {
        return Ok((start, futures::stream::empty().boxed()));
    };
    let stream = builder
        .with_row_groups(groups)
        .with_offset(skip - first_start)
        .with_limit(take)
        .with_batch_size(take.clamp(1, batch_rows))
        .build()?;
    Ok((start, stream.boxed()))
}

/// A result file read through its object store: ranged GETs only.
struct ResultFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ResultFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// `batch`'s rows as JSON objects (column name → value, SQL NULL as null) or,
/// with `arrays`, as arrays in column order, each with its size as JSON text
/// (and the comma that follows it in a page). In arrays, integers past
/// ±(2^53 − 1), which a JavaScript number cannot hold, are strings.
fn json_rows(
    batch: &RecordBatch,
    arrays: bool,
) -> Result<Vec<(usize, serde_json::Value)>, BoxError> {
    let mode = if arrays {
        arrow::json::StructMode::ListOnly
    } else {
        arrow::json::StructMode::ObjectOnly
    };
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_struct_mode(mode)
        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let text = writer.into_inner();
    text.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut row: serde_json::Value = serde_json::from_slice(line)?;
            if let serde_json::Value::Array(values) = &mut row {
                values.iter_mut().for_each(safe_integer);
            }
            Ok((serde_json::to_vec(&row)?.len() + 1, row))
        })
        .collect()
}

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// An integer a JavaScript number cannot hold, as a string.
fn safe_integer(value: &mut serde_json::Value) {
    let unsafe_int = match value {
        serde_json::Value::Number(n) => {
            n.as_u64().is_some_and(|v| v > MAX_SAFE_INTEGER)
                || n.as_i64()
                    .is_some_and(|v| v.unsigned_abs() > MAX_SAFE_INTEGER)
        }
        _ => false,
    };
    if unsafe_int {
        *value = serde_json::Value::String(value.to_string());
    }
}

/// `columns` with names made unique: a second `id` becomes `id_2` (a
/// third `id_3`, skipping names already taken), so rows as objects lose no
/// column to another of the same name.
pub(crate) fn unique_columns(mut columns: Vec<ColumnView>) -> Vec<ColumnView> {
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    let all: std::collections::HashSet<String> = columns.iter().map(|c| c.name.clone()).collect();
    for column in &mut columns {
        if taken.insert(column.name.clone()) {
            continue;
        }
        let base = column.name.clone();
        let mut n = 2;
        while all.contains(&format!("{base}_{n}")) || taken.contains(&format!("{base}_{n}")) {
            n += 1;
        }
        column.name = format!("{base}_{n}");
        taken.insert(column.name.clone());
    }
    columns
}

/// `batch` with its columns named `names` (as many as it has).
fn renamed(batch: &RecordBatch, names: &[String]) -> Result<RecordBatch, BoxError> {
    let schema = batch.schema();
    if schema.fields().len() != names.len()
        || schema
            .fields()
            .iter()
            .zip(names)
            .all(|(f, n)| f.name() == n)
    {
        return Ok(batch.clone());
    }
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, n)| f.as_ref().clone().with_name(n))
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    Ok(RecordBatch::try_new(schema, batch.columns().to_vec())?)
}

/// The result files holding rows `offset..offset + limit`, and the index of
/// the first row of the first of them. Without per-file row counts (results
/// stored by an older Squall), every file from the start.
fn page_files(outcome: &JobOutcome, offset: u64, limit: u64) -> (u64, Vec<String>) {
    if outcome.file_rows.len() != outcome.files.len() {
        return (0, outcome.files.clone());
    }
    let end = offset.saturating_add(limit);
    let mut start = 0;
    let mut first_row = None;
    let mut files = Vec::new();
    for (url, rows) in outcome.files.iter().zip(&outcome.file_rows) {
        let next = start + rows;
        if *rows > 0 && next > offset && start < end {
            first_row.get_or_insert(start);
            files.push(url.clone());
        }
        start = next;
    }
    (first_row.unwrap_or(offset), files)
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use object_store::PutPayload;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    #[test]
    fn a_page_reads_only_the_files_that_hold_it() {
        let outcome = JobOutcome {
            rows: 25,
            manifest_url: "m".into(),
            files: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            file_rows: vec![10, 0, 10, 5],
            columns: vec![],
            stages: vec![],
        };
        let page = |offset, limit| page_files(&outcome, offset, limit);
        assert_eq!(page(0, 5), (0, vec!["a".to_string()]));
        assert_eq!(page(5, 10), (0, vec!["a".to_string(), "c".to_string()]));
        assert_eq!(page(10, 10), (10, vec!["c".to_string()]));
        assert_eq!(page(22, 100), (20, vec!["d".to_string()]));
        assert_eq!(page(25, 10), (25, vec![]));
        let old = JobOutcome {
            file_rows: vec![],
            ..outcome.clone()
        };
        assert_eq!(page_files(&old, 12, 1), (0, old.files.clone()));
    }

    #[tokio::test]
    async fn rows_come_from_the_row_groups_that_hold_them() {
        // 1000 rows in row groups of 100: rows 250..255 are in group 2 alone.
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema.clone(), Some(props)).unwrap();
        let values = Int64Array::from_iter_values(0..1000);
        writer
            .write(&RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap())
            .unwrap();
        writer.close().unwrap();
        let stores = StoreRegistry::new();
        let (store, path) = stores.resolve("memory:///r/part-0.parquet").unwrap();
        store.put(&path, PutPayload::from(bytes)).await.unwrap();

        let read = |skip, take| {
            let stores = &stores;
            async move {
                let (total, batches) = read_rows(stores, "memory:///r/part-0.parquet", skip, take)
                    .await
                    .unwrap();
                let batches: Vec<RecordBatch> = batches.try_collect().await.unwrap();
                (total, batches)
            }
        };
        let (total, batches) = read(250, 5).await;
        assert_eq!(total, 1000);
        // The values of `n`, and each row's size as JSON text.
        let rows = |batches: &[RecordBatch]| -> Vec<(usize, i64)> {
            batches
                .iter()
                .flat_map(|b| json_rows(b, false).unwrap())
                .map(|(size, r)| (size, r["n"].as_i64().unwrap()))
                .collect()
        };
        let read_ns = |batches: &[RecordBatch]| -> Vec<i64> {
            rows(batches).into_iter().map(|(_, n)| n).collect()
        };
        assert_eq!(read_ns(&batches), [250, 251, 252, 253, 254]);
        // `{"n":250}` and its comma.
        assert_eq!(rows(&batches)[0].0, 10);
        // Across a row-group boundary, and past the end.
        let (_, batches) = read(198, 4).await;
        assert_eq!(read_ns(&batches), [198, 199, 200, 201]);
        let (_, batches) = read(1000, 4).await;
        assert!(batches.is_empty());
    }

    #[test]
    fn arrays_keep_every_column_and_every_digit() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("id", DataType::Int64, true),
        ]));
        let big = Int64Array::from(vec![9_007_199_254_740_993, -3]);
        let small = Int64Array::from(vec![Some(1), None]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(big), Arc::new(small)]).unwrap();
        let rows = json_rows(&batch, true).unwrap();
        assert_eq!(rows[0].1, serde_json::json!(["9007199254740993", 1]));
        assert_eq!(rows[1].1, serde_json::json!([-3, null]));
        assert_eq!(rows[1].0, "[-3,null]".len() + 1);
        let columns = unique_columns(ColumnView::of(&batch.schema()));
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["id", "id_2"]);
        let objects = json_rows(&renamed(&batch, &names).unwrap(), false).unwrap();
        assert_eq!(objects[1].1, serde_json::json!({"id": -3, "id_2": null}));
        let three = vec![
            ColumnView {
                name: "a".into(),
                data_type: "Int64".into(),
                nullable: true,
            },
            ColumnView {
                name: "a".into(),
                data_type: "Int64".into(),
                nullable: true,
            },
            ColumnView {
                name: "a_2".into(),
                data_type: "Int64".into(),
                nullable: true,
            },
        ];
        let names: Vec<String> = unique_columns(three).into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["a", "a_3", "a_2"]);
    }
}
