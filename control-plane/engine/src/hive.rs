//! Hive-style partitioned tables: files under `key=value/` folders
//! (`events/year=2026/month=11/part-0.parquet`) carry those keys as columns.
//!
//! # What belongs here
//! The partition columns of a table, declared (`year:int,month:int`) or read
//! off the folders down the first path under its prefix; and listing such a
//! table a level at a time, leaving out every folder a query's predicates on
//! those columns rule out, so that neither a LIST request nor a scan task is
//! spent on it. The predicates themselves are found by the planner.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::create_physical_expr;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use percent_encoding::percent_decode_str;

use crate::error::{Result, SquallError};

/// Most partition columns a table may declare.
pub const MAX_PARTITION_COLUMNS: usize = 16;
/// Folders listed at once while pruning.
const LISTINGS_AT_ONCE: usize = 16;
/// The folder name Hive and Spark give a null partition value.
const NULL_FOLDER_VALUE: &str = "__HIVE_DEFAULT_PARTITION__";

/// A partition column as declared: a name, and a type unless it is to be
/// inferred from the folders' values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumn {
    pub name: String,
    pub data_type: Option<DataType>,
}

impl PartitionColumn {
    /// `NAME` or `NAME:TYPE` (int, bigint, string, date, boolean, double).
    fn parse(text: &str) -> Result<Self> {
        let bad = |m: String| SquallError::InvalidArgument(m);
        let (name, data_type) = match text.split_once(':') {
            Some((name, ty)) => (name.trim(), Some(parse_type(ty.trim())?)),
            None => (text.trim(), None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(bad(format!(
                "partition column '{}' must be 1 to 128 letters, digits and '_', not \
                 starting with a digit",
                name.escape_default()
            )));
        }
        Ok(Self {
            name: name.to_string(),
            data_type,
        })
    }
}

/// `year:int,month:int`: the partition columns, outermost folder first.
pub fn parse_columns(text: &str) -> Result<Vec<PartitionColumn>> {
    let columns = text
        .split(',')
        .map(PartitionColumn::parse)
        .collect::<Result<Vec<_>>>()?;
    if columns.len() > MAX_PARTITION_COLUMNS {
        return Err(SquallError::InvalidArgument(format!(
            "{} partition columns, over the limit of {MAX_PARTITION_COLUMNS}",
            columns.len()
        )));
    }
    for (i, c) in columns.iter().enumerate() {
        if columns[..i]
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&c.name))
        {
            return Err(SquallError::InvalidArgument(format!(
                "partition column '{}' is named twice",
                c.name
            )));
        }
    }
    Ok(columns)
}

fn parse_type(text: &str) -> Result<DataType> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "int" | "integer" | "bigint" | "long" => DataType::Int64,
        "string" | "varchar" | "text" => DataType::Utf8,
        "date" => DataType::Date32,
        "bool" | "boolean" => DataType::Boolean,
        "double" | "float" => DataType::Float64,
        other => {
            return Err(SquallError::InvalidArgument(format!(
                "unknown partition column type '{}' (expected int, string, date, boolean \
                 or double)",
                other.escape_default()
            )));
        }
    })
}

/// The name `--partition` takes for `data_type`.
pub fn type_name(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int64 => "int",
        DataType::Date32 => "date",
        DataType::Boolean => "boolean",
        DataType::Float64 => "double",
        _ => "string",
    }
}

/// `year:int,month:int` for `columns`.
pub fn describe(columns: &[(String, DataType)]) -> String {
    columns
        .iter()
        .map(|(n, t)| format!("{n}:{}", type_name(t)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A folder's `key=value`, the value percent-decoded.
fn key_value(segment: &str) -> Option<(&str, String)> {
    let (key, value) = segment.split_once('=')?;
    if key.is_empty() {
        return None;
    }
    let value = percent_decode_str(value)
        .decode_utf8()
        .map_or_else(|_| value.to_string(), |v| v.into_owned());
    Some((key, value))
}

/// Hidden and marker names (`.tmp`, `_SUCCESS`, `_squall_claim.json`) are not data.
fn hidden(segment: &str) -> bool {
    segment.starts_with('.') || segment.starts_with('_')
}

/// Int64 when every value is an integer, else Utf8.
fn infer_type<'a>(values: impl Iterator<Item = &'a str>) -> DataType {
    let mut values = values.filter(|v| *v != NULL_FOLDER_VALUE).peekable();
    if values.peek().is_some() && values.all(|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else {
        DataType::Utf8
    }
}

/// The typed value of a partition folder (`value` of column `column`), or
/// an error naming the folder.
/// (DataFusion reads Hive's null folder, [`NULL_FOLDER_VALUE`], as that text.)
fn typed(column: &(String, DataType), value: &str, folder: &Path) -> Result<ScalarValue, String> {
    ScalarValue::try_from_string(value.to_string(), &column.1).map_err(|_| {
        format!(
            "folder {folder}: '{value}' is not of type {} (declare the column's type: \
             {}:string)",
            type_name(&column.1),
            column.0
        )
    })
}

/// A partitioned table's layout: its `key=value` folders' columns, outermost
/// first, and a data file of the first leaf folder (its schema is read from it).
#[derive(Debug, Clone)]
pub struct Partitioned {
    pub columns: Vec<(String, DataType)>,
    pub sample: ObjectMeta,
}

/// Whether `path`, under the folder `base`, lies in a `key=value` folder of it
/// (a table's first data file there says it is partitioned).
pub fn in_partition_folder(base: &Path, path: &Path) -> bool {
    let Some(mut rest) = path.prefix_match(base) else {
        return false;
    };
    match (rest.next(), rest.next()) {
        (Some(first), Some(_)) => key_value(first.as_ref()).is_some(),
        _ => false,
    }
}

/// The partition layout of the folder `base`, down its first path, with the
/// columns `declared` (None: as its folders say); None when its top level
/// holds no `key=value` folders of one key and nothing was declared. A
/// declared column the folders do not have, or name otherwise, is an error,
/// and so is a level of more than `max_folders` folders.
pub async fn discover(
    store: &Arc<dyn ObjectStore>,
    base: &Path,
    declared: Option<&[PartitionColumn]>,
    max_folders: Option<usize>,
) -> Result<Option<Partitioned>, String> {
    let mut columns: Vec<(String, DataType)> = Vec::new();
    let mut folder = base.clone();
    loop {
        let listing = store
            .list_with_delimiter(Some(&folder))
            .await
            .map_err(|e| format!("cannot list {folder}: {e}"))?;
        let folders: Vec<&Path> = listing
            .common_prefixes
            .iter()
            .filter(|p| p.filename().is_some_and(|n| !hidden(n)))
            .collect();
        if let Some(max) = max_folders
            && folders.len() > max
        {
            return Err(format!("{folder} holds more than {max} folders"));
        }
        let pairs: Vec<(&str, String)> = folders
            .iter()
            .filter_map(|p| p.filename().and_then(key_value))
            .collect();
        let level = columns.len();
        let wanted = declared.and_then(|d| d.get(level));
        let key = pairs.first().map(|(k, _)| *k);
        let partitioned = !pairs.is_empty()
            && pairs.len() == folders.len()
            && pairs.iter().all(|(k, _)| Some(*k) == key)
            && declared.is_none_or(|d| level < d.len());
        if !partitioned {
            if let Some(wanted) = wanted {
                return Err(format!(
                    "partition column '{}' was declared, but {folder} holds no '{}=...' \
                     folders",
                    wanted.name, wanted.name
                ));
            }
            if level == 0 {
                return Ok(None);
            }
            let sample = listing
                .objects
                .into_iter()
                .find(|o| o.location.filename().is_some_and(|n| !hidden(n)) && o.size > 0)
                .ok_or_else(|| format!("no data files in {folder}"))?;
            return Ok(Some(Partitioned { columns, sample }));
        }
        let key = key.unwrap_or_default().to_string();
        if let Some(wanted) = wanted
            && wanted.name != key
        {
            return Err(format!(
                "partition column '{}' was declared, but the folders of {folder} are \
                 '{key}=...'",
                wanted.name
            ));
        }
        let data_type = match wanted.and_then(|w| w.data_type.clone()) {
            Some(t) => t,
            None => infer_type(pairs.iter().map(|(_, v)| v.as_str())),
        };
        columns.push((key, data_type));
        // Folder names sort as listed; the first path down stands for all.
        let mut sorted: Vec<&Path> = folders;
        sorted.sort();
        folder = sorted[0].clone();
    }
}

/// Which partition folders a query can read: per scan of the table, the
/// conjuncts of its filters that name only partition columns. A folder is
/// read when some scan's conjuncts do not rule it out.
#[derive(Debug, Clone, Default)]
pub struct PartitionPredicate {
    scans: Vec<Vec<Expr>>,
}

impl PartitionPredicate {
    /// From each scan's filters, those on `columns` only (unqualified).
    pub fn new(columns: &[(String, DataType)], scans: Vec<Vec<Expr>>) -> Self {
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let scans = scans
            .into_iter()
            .map(|filters| {
                filters
                    .into_iter()
                    .filter(|f| expr_applicable_for_cols(&names, f))
                    .map(unqualified)
                    .collect()
            })
            .collect();
        Self { scans }
    }

    /// Whether nothing is ruled out.
    pub fn admits_all(&self) -> bool {
        self.scans.iter().any(Vec::is_empty)
    }

    /// Whether a folder with `values` for the first columns may hold rows
    /// some scan reads; what cannot be evaluated yet (or at all) counts as true.
    fn admits(&self, columns: &[(String, DataType)], values: &[ScalarValue]) -> bool {
        if self.scans.is_empty() || self.admits_all() {
            return true;
        }
        let known = &columns[..values.len()];
        let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
        self.scans.iter().any(|conjuncts| {
            conjuncts
                .iter()
                .filter(|c| expr_applicable_for_cols(&names, c))
                .all(|c| evaluate(c, known, values).unwrap_or(true))
        })
    }
}

fn unqualified(expr: Expr) -> Expr {
    expr.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
            Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .unwrap_or_else(|e| Expr::Literal(ScalarValue::Utf8(Some(e.to_string())), None))
}

/// `expr` on one row of `values` (None: it could not be evaluated).
fn evaluate(expr: &Expr, columns: &[(String, DataType)], values: &[ScalarValue]) -> Option<bool> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, t)| Field::new(n, t.clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let arrays: Vec<ArrayRef> = values
        .iter()
        .map(|v| v.to_array().ok())
        .collect::<Option<_>>()?;
    let batch = RecordBatch::try_new(schema.clone(), arrays).ok()?;
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).ok()?;
    let physical = create_physical_expr(
        expr,
        &df_schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .ok()?;
    let result = physical.evaluate(&batch).ok()?.into_array(1).ok()?;
    let result = result.as_boolean_opt()?;
    Some(result.is_valid(0) && result.value(0))
}

/// A partitioned table's listing: its files and the LIST requests made.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub files: Vec<ObjectMeta>,
    pub lists: u64,
    /// Leaf folders read, and left out.
    pub folders_read: u64,
    pub folders_pruned: u64,
}

/// The files of the partitioned table at `base` in the folders `predicate`
/// admits, listed a level at a time; more than `max_files` is an error.
pub async fn list_pruned(
    store: &Arc<dyn ObjectStore>,
    base: &Path,
    columns: &[(String, DataType)],
    predicate: &PartitionPredicate,
    max_files: Option<usize>,
) -> Result<Pruned, String> {
    let mut pruned = Pruned::default();
    let mut frontier: Vec<(Path, Vec<ScalarValue>)> = vec![(base.clone(), Vec::new())];
    for column in columns {
        let listed: Vec<(Vec<Path>, Vec<ScalarValue>)> =
            futures::stream::iter(frontier.into_iter().map(|(folder, values)| async move {
                let listing = store
                    .list_with_delimiter(Some(&folder))
                    .await
                    .map_err(|e| format!("cannot list {folder}: {e}"))?;
                Ok::<_, String>((listing.common_prefixes, values))
            }))
            .buffered(LISTINGS_AT_ONCE)
            .try_collect()
            .await?;
        pruned.lists += listed.len() as u64;
        let folders: usize = listed.iter().map(|(f, _)| f.len()).sum();
        if let Some(max) = max_files
            && folders > max
        {
            return Err(format!(
                "{base} holds more than {max} '{}=...' folders in the partitions the \
                 query reads, over the limit of {max} per table",
                column.0
            ));
        }
        frontier = Vec::new();
        for (folders, values) in listed {
            for folder in folders {
                let Some((key, value)) = folder.filename().and_then(key_value) else {
                    continue;
                };
                if key != column.0 {
                    continue;
                }
                let mut values = values.clone();
                values.push(typed(column, &value, &folder)?);
                if predicate.admits(columns, &values) {
                    frontier.push((folder, values));
                } else {
                    pruned.folders_pruned += 1;
                }
            }
        }
    }
    pruned.folders_read = frontier.len() as u64;
    let depth = base.parts().count() + columns.len();
    let lists: Vec<Vec<ObjectMeta>> =
        futures::stream::iter(frontier.into_iter().map(|(folder, _)| async move {
            store
                .list(Some(&folder))
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| format!("cannot list {folder}: {e}"))
        }))
        .buffered(LISTINGS_AT_ONCE)
        .try_collect()
        .await?;
    pruned.lists += lists.len() as u64;
    for file in lists.into_iter().flatten() {
        // As DataFusion reads a partitioned table: the files right in a leaf
        // folder (or in deeper `key=value` folders).
        let below: Vec<_> = file.location.parts().skip(depth).collect();
        let plain = below.iter().filter(|p| !p.as_ref().contains('=')).count();
        if plain == 1 {
            pruned.files.push(file);
        }
        if let Some(max) = max_files
            && pruned.files.len() > max
        {
            return Err(format!(
                "{base} holds more than {max} files in the partitions the query reads, \
                 over the limit of {max} files per table; narrow the query's partition \
                 predicates"
            ));
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    async fn lake() -> Arc<dyn ObjectStore> {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for key in [
            "ev/year=2025/month=11/a.parquet",
            "ev/year=2025/month=12/a.parquet",
            "ev/year=2026/month=1/a.parquet",
            "ev/year=2026/month=1/b.parquet",
            "ev/year=2026/month=2/a.parquet",
            "ev/year=2026/month=2/_SUCCESS",
            "ev/_common_metadata",
            "ev/stray.parquet",
        ] {
            store
                .put(&key.into(), PutPayload::from_static(b"data"))
                .await
                .unwrap();
        }
        store
    }

    #[test]
    fn parses_declared_columns() {
        let c = parse_columns("year:int, month:INT,region").unwrap();
        assert_eq!(c[0].data_type, Some(DataType::Int64));
        assert_eq!(c[1].name, "month");
        assert_eq!(c[2].data_type, None);
        for (bad, needle) in [
            ("year:decimal", "unknown partition column type 'decimal'"),
            ("9y:int", "partition column '9y'"),
            ("a,b,A", "'A' is named twice"),
            ("", "partition column ''"),
        ] {
            let err = parse_columns(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn discovers_columns_and_types_from_the_first_path() {
        let store = lake().await;
        let found = discover(&store, &"ev".into(), None, None).await.unwrap();
        let Partitioned { columns, sample } = found.unwrap();
        assert_eq!(
            columns,
            [
                ("year".to_string(), DataType::Int64),
                ("month".to_string(), DataType::Int64)
            ]
        );
        assert_eq!(sample.location.as_ref(), "ev/year=2025/month=11/a.parquet");
        // Declared: names checked, types taken.
        let declared = parse_columns("year:string,month").unwrap();
        let found = discover(&store, &"ev".into(), Some(&declared), None).await;
        assert_eq!(found.unwrap().unwrap().columns[0].1, DataType::Utf8);
        let wrong = parse_columns("year,day").unwrap();
        let err = discover(&store, &"ev".into(), Some(&wrong), None)
            .await
            .unwrap_err();
        assert!(err.contains("'month=...'"), "{err}");
        let deep = parse_columns("year,month,day").unwrap();
        let err = discover(&store, &"ev".into(), Some(&deep), None)
            .await
            .unwrap_err();
        assert!(err.contains("partition column 'day' was declared"), "{err}");
        let err = discover(&store, &"ev".into(), None, Some(1))
            .await
            .unwrap_err();
        assert!(err.contains("more than 1 folders"), "{err}");
        // A folder of files is not partitioned.
        let flat = discover(&store, &"ev/year=2026/month=1".into(), None, None).await;
        assert!(flat.unwrap().is_none());
        assert!(in_partition_folder(
            &"ev".into(),
            &"ev/year=2026/month=1/a.parquet".into()
        ));
        assert!(!in_partition_folder(
            &"ev".into(),
            &"ev/stray.parquet".into()
        ));
        assert!(!in_partition_folder(&"ev".into(), &"ev/x/a.parquet".into()));
    }

    #[tokio::test]
    async fn prunes_folders_a_level_at_a_time() {
        let store = lake().await;
        let columns = vec![
            ("year".to_string(), DataType::Int64),
            ("month".to_string(), DataType::Int64),
        ];
        // (Marker files are left to the caller, as in a plain folder.)
        let names = |p: &Pruned| {
            p.files
                .iter()
                .map(|f| f.location.to_string())
                .filter(|f| !f.contains("/_"))
                .collect::<Vec<_>>()
        };
        // year = 2026 AND month >= 2, and a filter on a data column (ignored).
        let one = PartitionPredicate::new(
            &columns,
            vec![vec![
                col("ev.year").eq(lit(2026i64)),
                col("month").gt_eq(lit(2i64)),
                col("amount").gt(lit(5)),
            ]],
        );
        let p = list_pruned(&store, &"ev".into(), &columns, &one, None)
            .await
            .unwrap();
        assert_eq!(names(&p), ["ev/year=2026/month=2/a.parquet"]);
        // 2025 pruned at the first level: its months are never listed.
        assert_eq!(p.lists, 1 + 1 + 1, "{p:?}");
        assert_eq!((p.folders_read, p.folders_pruned), (1, 2));
        // Two scans: what either reads.
        let two = PartitionPredicate::new(
            &columns,
            vec![
                vec![col("year").eq(lit(2025i64))],
                vec![col("month").eq(lit(1i64))],
            ],
        );
        let p = list_pruned(&store, &"ev".into(), &columns, &two, None)
            .await
            .unwrap();
        assert_eq!(names(&p).len(), 4, "{:?}", names(&p));
        // No predicate: every partition file, not the stray one at the top.
        let all = PartitionPredicate::new(&columns, vec![vec![]]);
        assert!(all.admits_all());
        let p = list_pruned(&store, &"ev".into(), &columns, &all, Some(5))
            .await
            .unwrap_err();
        assert!(p.contains("more than 5 files"), "{p}");
        let p = list_pruned(&store, &"ev".into(), &columns, &all, Some(3))
            .await
            .unwrap_err();
        assert!(p.contains("more than 3 'month=...' folders"), "{p}");
        // A value that is not of the column's type names its folder.
        store
            .put(
                &"ev/year=later/month=1/a.parquet".into(),
                PutPayload::from_static(b"x"),
            )
            .await
            .unwrap();
        let err = list_pruned(&store, &"ev".into(), &columns, &all, None)
            .await
            .unwrap_err();
        assert!(
            err.contains("ev/year=later: 'later' is not of type int"),
            "{err}"
        );
    }
}
