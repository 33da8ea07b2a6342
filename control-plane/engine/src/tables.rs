//! Tables: a name, a URL (one file or a prefix of files) and a format.
//!
//! # What belongs here
//! Parsing `NAME[:FORMAT]=URL`, turning local paths into `file://` URLs, listing a
//! table's files (the planner sizes scan tasks from this listing), inferring the
//! format from file extensions, and registering the table with DataFusion as a
//! listing table.

use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::TableProvider;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use squall_executor::ObjectUrl;
use url::Url;

use crate::access::AccessPolicy;
use crate::commit::{CLAIM_NAME, MANIFEST_NAME, Manifest};
use crate::csv_nulls::{self, NullMarkedTable};
use crate::error::{Result, SquallError};
use crate::formats::{Compression, CsvOptions, file_format, split_compression};
use crate::hive::{self, PartitionColumn, PartitionPredicate, Partitioned};

pub use crate::formats::TableFormat;

/// A table as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    pub url: String,
    /// None: infer from the files' extensions.
    pub format: Option<TableFormat>,
    /// Its Hive partition columns, outermost folder first. None: those its
    /// `key=value` folders show, if any.
    pub partitions: Option<Vec<PartitionColumn>>,
    /// How its CSV files are written (None: the defaults).
    pub csv: Option<CsvOptions>,
}

impl TableSpec {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            format: None,
            partitions: None,
            csv: None,
        }
    }

    pub fn with_format(mut self, format: TableFormat) -> Self {
        self.format = Some(format);
        self
    }

    pub fn with_partitions(mut self, partitions: Vec<PartitionColumn>) -> Self {
        self.partitions = Some(partitions);
        self
    }
}

impl FromStr for TableSpec {
    type Err = SquallError;

    /// `NAME=URL` or `NAME:FORMAT=URL`.
    fn from_str(s: &str) -> Result<Self> {
        let (head, url) = s.split_once('=').ok_or_else(|| {
            SquallError::InvalidArgument(format!("table '{s}' is not NAME=URL or NAME:FORMAT=URL"))
        })?;
        let (name, format) = match head.split_once(':') {
            Some((name, format)) => (name, Some(format.parse()?)),
            None => (head, None),
        };
        Self::checked(name, url, format)
    }
}

/// Longest table name, in bytes.
pub const MAX_TABLE_NAME: usize = 128;

/// Refuses a table name that is not `[A-Za-z_][A-Za-z0-9_]*` of at most
/// [`MAX_TABLE_NAME`] characters.
pub fn check_table_name(name: &str) -> Result<()> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= MAX_TABLE_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        return Ok(());
    }
    let shown: String = name.chars().take(MAX_TABLE_NAME).collect();
    Err(SquallError::InvalidArgument(format!(
        "table name '{}' must be 1 to {MAX_TABLE_NAME} letters, digits and '_', not starting \
         with a digit",
        shown.escape_default()
    )))
}

impl TableSpec {
    /// A table named `name` (checked) at `url`, in `format` or the one its
    /// files' extensions say.
    pub fn checked(name: &str, url: &str, format: Option<TableFormat>) -> Result<Self> {
        check_table_name(name)?;
        if url.is_empty() {
            return Err(SquallError::InvalidArgument(format!(
                "table '{name}' has an empty URL"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            url: url.to_string(),
            format,
            partitions: None,
            csv: None,
        })
    }
}

/// Sets the Hive partition columns of `tables` from `--partition` arguments
/// (`[TABLE=]COLUMN[:TYPE],...`, see [`table_arguments`]).
pub fn set_partitions(tables: &mut [TableSpec], arguments: &[String]) -> Result<()> {
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    for (index, columns) in table_arguments("--partition", &names, arguments, &[])? {
        tables[index].partitions = Some(hive::parse_columns(columns)?);
    }
    Ok(())
}

/// The keys of CSV options (`delimiter=;`), not table names.
pub const CSV_OPTION_KEYS: &[&str] = &["delimiter", "header", "quote", "escape", "null"];

/// Sets the CSV options of `tables` from `--csv` arguments
/// (`[TABLE=]delimiter=;,header=false,...`, see [`table_arguments`]).
pub fn set_csv_options(tables: &mut [TableSpec], arguments: &[String]) -> Result<()> {
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    for (index, options) in table_arguments("--csv", &names, arguments, CSV_OPTION_KEYS)? {
        tables[index].csv = Some(CsvOptions::parse(options)?);
    }
    Ok(())
}

/// The table (an index into `names`) and the value of each `flag` argument:
/// `[TABLE=]VALUE`, TABLE left out when there is one table (a word before the
/// first `=` that is one of `keys` starts the value, not a table name).
pub fn table_arguments<'a>(
    flag: &str,
    names: &[&str],
    arguments: &'a [String],
    keys: &[&str],
) -> Result<Vec<(usize, &'a str)>> {
    let mut found: Vec<(usize, &str)> = Vec::new();
    for argument in arguments {
        let (table, value) = match argument.split_once('=') {
            Some((table, value)) if !keys.contains(&table) => (Some(table), value),
            _ => (None, argument.as_str()),
        };
        let index = match (table, names.len()) {
            (Some(name), _) => names
                .iter()
                .position(|t| t.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    SquallError::InvalidArgument(format!(
                        "{flag} {argument}: no table '{name}' was given"
                    ))
                })?,
            (None, 1) => 0,
            (None, n) => {
                return Err(SquallError::InvalidArgument(format!(
                    "{flag} {argument}: {n} tables are given; name one: {flag} TABLE={argument}"
                )));
            }
        };
        if found.iter().any(|(i, _)| *i == index) {
            return Err(SquallError::InvalidArgument(format!(
                "table '{}' is given {flag} twice",
                names[index]
            )));
        }
        found.push((index, value));
    }
    Ok(found)
}

pub use crate::urls::to_url;

/// A table's files, found by listing its URL.
#[derive(Debug, Clone)]
pub struct ResolvedTable {
    pub spec: TableSpec,
    /// The table URL; a prefix ends with '/'.
    pub url: Url,
    pub format: TableFormat,
    /// Its files' whole-file compression (CSV and JSON).
    pub compression: Compression,
    pub files: Vec<ObjectMeta>,
    /// Its Hive partition columns, outermost first (none: not partitioned).
    pub partitions: Vec<(String, DataType)>,
    /// Of a partitioned table, how its listing was pruned.
    pub pruned: Option<PrunedListing>,
    /// Of a partitioned table, the file its schema is read from when no
    /// partition is left to read.
    pub sample: Option<ObjectMeta>,
}

/// How a partitioned table's listing was pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedListing {
    pub lists: u64,
    pub folders_read: u64,
    pub folders_pruned: u64,
}

impl ResolvedTable {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What a shared server bounds when it lists a table.
#[derive(Debug, Clone, Default)]
pub struct TableGuard {
    /// Refuse a table whose prefix holds more objects than this.
    pub max_files: Option<usize>,
    /// Refuse a listed local file whose links lead outside what this allows.
    pub access: Option<Arc<AccessPolicy>>,
}

/// Where a table's files are: one file, a folder listed, or a partitioned
/// folder (its top levels read down the first path).
#[derive(Debug, Clone)]
pub struct Located {
    /// The table URL; a folder's ends with '/'.
    url: Url,
    place: Place,
}

#[derive(Debug, Clone)]
enum Place {
    File(ObjectMeta),
    /// Every object under the folder.
    Listed(Vec<ObjectMeta>),
    Partitioned(Partitioned),
}

impl Located {
    /// The partition columns of a partitioned table.
    pub fn partitions(&self) -> Option<&[(String, DataType)]> {
        match &self.place {
            Place::Partitioned(p) => Some(&p.columns),
            _ => None,
        }
    }
}

/// Lists a table's files and settles its format (see [`resolve_located`]).
pub async fn resolve_table(
    spec: &TableSpec,
    store: &Arc<dyn ObjectStore>,
    guard: &TableGuard,
) -> Result<ResolvedTable> {
    let located = locate(spec, store, guard).await?;
    resolve_located(spec, store, guard, &located, None).await
}

/// Finds whether `spec` names a file or a folder, and how the folder is laid out.
pub async fn locate(
    spec: &TableSpec,
    store: &Arc<dyn ObjectStore>,
    guard: &TableGuard,
) -> Result<Located> {
    let table_err = |message: String| SquallError::Table {
        table: spec.name.clone(),
        message,
    };
    let mut url = to_url(&spec.url)?;
    let location = ObjectUrl::from_url(&url).map_err(|e| table_err(e.to_string()))?;
    let path = location.path();
    if !url.path().ends_with('/') {
        match store.head(path).await {
            Ok(meta) => {
                if spec.partitions.as_ref().is_some_and(|p| !p.is_empty()) {
                    return Err(table_err(format!(
                        "{url} is one file; partition columns need a folder of \
                         key=value folders"
                    )));
                }
                let place = Place::File(meta);
                return Ok(Located { url, place });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            // A local directory named without a trailing slash.
            Err(_) if url.scheme() == "file" && std::path::Path::new(url.path()).is_dir() => {}
            Err(e) => return Err(table_err(format!("cannot read {url}: {e}"))),
        }
        url.set_path(&format!("{}/", url.path()));
    }
    let declared = spec.partitions.as_deref().filter(|p| !p.is_empty());
    let place = match declared {
        Some(declared) => {
            match hive::discover(store, path, Some(declared), guard.max_files).await {
                Ok(Some(partitioned)) => Place::Partitioned(partitioned),
                Ok(None) => Place::Listed(
                    list_all(store, &url, path, guard)
                        .await
                        .map_err(table_err)?,
                ),
                Err(message) => return Err(table_err(message)),
            }
        }
        None => list_or_discover(store, &url, path, guard)
            .await
            .map_err(table_err)?,
    };
    Ok(Located { url, place })
}

/// The folder `path` (at `url`) listed, unless its first data file lies in
/// a `key=value` folder: then its partition layout, if it has one.
async fn list_or_discover(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    path: &object_store::path::Path,
    guard: &TableGuard,
) -> std::result::Result<Place, String> {
    let mut listing = store.list(Some(path));
    let mut objects: Vec<ObjectMeta> = Vec::new();
    let mut data_seen = false;
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(|e| format!("cannot list {url}: {e}"))?
    {
        if !data_seen && !is_hidden_below(path, &meta.location) {
            data_seen = true;
            if hive::in_partition_folder(path, &meta.location) {
                drop(listing);
                return match hive::discover(store, path, None, guard.max_files).await? {
                    Some(partitioned) => Ok(Place::Partitioned(partitioned)),
                    None => Ok(Place::Listed(list_all(store, url, path, guard).await?)),
                };
            }
        }
        objects.push(meta);
        if let Some(max) = guard.max_files
            && objects.len() > max
        {
            return Err(too_many(url, max));
        }
    }
    Ok(Place::Listed(objects))
}

/// Whether `location`, below `path`, is hidden or in a hidden folder.
fn is_hidden_below(path: &object_store::path::Path, location: &object_store::path::Path) -> bool {
    location.prefix_match(path).is_none_or(|mut rest| {
        rest.any(|p| {
            let p = p.as_ref();
            p.starts_with('.') || p.starts_with('_')
        })
    })
}

/// A partitioned table as one of its files, to read its schema and plan
/// against before its partitions are pruned; None for any other table.
pub fn provisional(spec: &TableSpec, located: &Located) -> Option<ResolvedTable> {
    let Place::Partitioned(Partitioned { columns, sample }) = &located.place else {
        return None;
    };
    let format = spec.format.or_else(|| {
        sample
            .location
            .filename()
            .and_then(TableFormat::from_file_name)
    })?;
    Some(ResolvedTable {
        spec: spec.clone(),
        url: located.url.clone(),
        format,
        compression: compression_of(std::slice::from_ref(sample)).ok()?,
        files: vec![sample.clone()],
        partitions: columns.clone(),
        pruned: None,
        sample: Some(sample.clone()),
    })
}

/// Lists a located table's files (of a partitioned table, those in the
/// folders `predicate` admits) and settles its format. Of a folder that holds
/// a Squall manifest only the files it names are taken, and of one that holds
/// only a job's claim (a job still writing) none (see `output`).
pub async fn resolve_located(
    spec: &TableSpec,
    store: &Arc<dyn ObjectStore>,
    guard: &TableGuard,
    located: &Located,
    predicate: Option<&PartitionPredicate>,
) -> Result<ResolvedTable> {
    let table_err = |message: String| SquallError::Table {
        table: spec.name.clone(),
        message,
    };
    let url = located.url.clone();
    let location = ObjectUrl::from_url(&url).map_err(|e| table_err(e.to_string()))?;
    let path = location.path();
    let mut partitions = Vec::new();
    let mut pruned = None;
    let mut sample = None;
    let files: Vec<ObjectMeta> = match &located.place {
        Place::File(meta) => vec![meta.clone()],
        Place::Listed(objects) => data_files(store, path, objects.clone())
            .await
            .map_err(table_err)?,
        Place::Partitioned(layout) => {
            let (files, listing) = list_partitioned(store, path, layout, predicate, guard)
                .await
                .map_err(table_err)?;
            partitions = layout.columns.clone();
            sample = Some(layout.sample.clone());
            pruned = Some(listing);
            files
        }
    };
    if files.is_empty() && pruned.is_some_and(|p| p.folders_read == 0) {
        // Every partition ruled out: nothing to read is an answer, not an error.
        let format = spec
            .format
            .or_else(|| {
                let name = sample.as_ref().and_then(|s| s.location.filename());
                name.and_then(TableFormat::from_file_name)
            })
            .unwrap_or(TableFormat::Parquet);
        return Ok(ResolvedTable {
            spec: spec.clone(),
            url,
            format,
            compression: Compression::None,
            files,
            partitions,
            pruned,
            sample,
        });
    }
    if files.is_empty() {
        return Err(table_err(format!("no files at {url}")));
    }
    if let Some(access) = &guard.access {
        for file in &files {
            let mut file_url = url.clone();
            file_url.set_path(&format!("/{}", file.location));
            access.check_listed(&spec.name, &file_url)?;
        }
    }

    let format = match spec.format {
        Some(format) => format,
        None => format_of_names(&spec.name, &files, &url).map_err(table_err)?,
    };
    // Keep only the files of the table's format when their names say so.
    let named: Vec<ObjectMeta> = files
        .iter()
        .filter(|f| f.location.filename().and_then(TableFormat::from_file_name) == Some(format))
        .cloned()
        .collect();
    let files = if named.is_empty() { files } else { named };
    let compression = compression_of(&files).map_err(|m| table_err(format!("{url}: {m}")))?;
    if spec.csv.is_some() && format != TableFormat::Csv {
        return Err(table_err(format!(
            "CSV options were given, but its files are {format}"
        )));
    }
    Ok(ResolvedTable {
        spec: spec.clone(),
        url,
        format,
        compression,
        files,
        partitions,
        pruned,
        sample,
    })
}

/// The one compression the names of `files` say.
fn compression_of(files: &[ObjectMeta]) -> std::result::Result<Compression, String> {
    let mut found = files.iter().map(|f| {
        f.location
            .filename()
            .map_or(Compression::None, |n| split_compression(n).1)
    });
    let first = found.next().unwrap_or_default();
    match found.find(|c| *c != first) {
        None => Ok(first),
        Some(other) => Err(format!(
            "files compressed as {first} and as {other}; point the table at one kind"
        )),
    }
}

/// The data files of a partitioned table in the folders `predicate` admits
/// (all without one), and how they were listed.
async fn list_partitioned(
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
    layout: &Partitioned,
    predicate: Option<&PartitionPredicate>,
    guard: &TableGuard,
) -> std::result::Result<(Vec<ObjectMeta>, PrunedListing), String> {
    let admit_all = PartitionPredicate::default();
    let predicate = predicate.unwrap_or(&admit_all);
    let listed =
        hive::list_pruned(store, path, &layout.columns, predicate, guard.max_files).await?;
    let listing = PrunedListing {
        lists: listed.lists,
        folders_read: listed.folders_read,
        folders_pruned: listed.folders_pruned,
    };
    Ok((data_files(store, path, listed.files).await?, listing))
}

fn too_many(url: &Url, max: usize) -> String {
    format!(
        "{url} holds more than {max} files, over the limit of {max} files \
         per table; name a narrower prefix"
    )
}

/// Every object under the folder `path` (at `url`), at most `guard.max_files`.
async fn list_all(
    store: &Arc<dyn ObjectStore>,
    url: &url::Url,
    path: &object_store::path::Path,
    guard: &TableGuard,
) -> std::result::Result<Vec<ObjectMeta>, String> {
    let mut listing = store.list(Some(path));
    let mut files: Vec<ObjectMeta> = Vec::new();
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(|e| format!("cannot list {url}: {e}"))?
    {
        files.push(meta);
        if let Some(max) = guard.max_files
            && files.len() > max
        {
            return Err(too_many(url, max));
        }
    }
    Ok(files)
}

/// Of the objects listed under `path`, the data files: less what Squall's
/// marks exclude and hidden or marker files, in name order.
async fn data_files(
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
    files: Vec<ObjectMeta>,
) -> std::result::Result<Vec<ObjectMeta>, String> {
    let mut files = committed_files(store, files).await?;
    // Hidden and marker files (`.crc`, `_SUCCESS`, manifests) are not data.
    // Only the parts below the table's prefix count: the prefix itself may
    // sit in a hidden folder.
    files.retain(|f| {
        f.location.prefix_match(path).is_some_and(|mut rest| {
            rest.all(|p| {
                let p = p.as_ref();
                !p.starts_with('.') && !p.starts_with('_')
            })
        })
    });
    files.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(files)
}

/// The one format the names of `files` (of table `table`, at `url`) say.
fn format_of_names(
    table: &str,
    files: &[ObjectMeta],
    url: &url::Url,
) -> std::result::Result<TableFormat, String> {
    let mut formats: Vec<TableFormat> = files
        .iter()
        .filter_map(|f| f.location.filename().and_then(TableFormat::from_file_name))
        .collect();
    formats.dedup();
    match formats.as_slice() {
        [format] => Ok(*format),
        [] => Err(format!(
            "cannot tell the format of the files at {url} from their names; \
             name it: --table {table}:parquet|csv|json=URL"
        )),
        _ => Err(format!(
            "files at {url} are of several formats; point the table at one kind"
        )),
    }
}

/// `files` less those a Squall job's marks exclude: in a folder holding a
/// manifest, the files it does not name; in a folder holding only a claim, all.
async fn committed_files(
    store: &Arc<dyn ObjectStore>,
    files: Vec<ObjectMeta>,
) -> std::result::Result<Vec<ObjectMeta>, String> {
    let folder_of = |p: &object_store::path::Path| {
        p.as_ref()
            .rsplit_once('/')
            .map_or(String::new(), |(folder, _)| folder.to_string())
    };
    let marked = |name: &str| {
        files
            .iter()
            .filter(|f| f.location.filename() == Some(name))
            .map(|f| f.location.clone())
            .collect::<Vec<_>>()
    };
    let manifests = marked(MANIFEST_NAME);
    let claims = marked(CLAIM_NAME);
    if manifests.is_empty() && claims.is_empty() {
        return Ok(files);
    }
    // Folder → the paths its manifest names.
    let mut named: HashMap<String, HashSet<String>> = HashMap::new();
    let read = futures::stream::iter(manifests.into_iter().map(|location| async move {
        let read = async {
            let bytes = store.get(&location).await?.bytes().await?;
            Ok::<_, object_store::Error>(bytes)
        };
        let bytes = read
            .await
            .map_err(|e| format!("cannot read the manifest {location}: {e}"))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the manifest {location} is unreadable: {e}"))?;
        let paths = manifest
            .files
            .iter()
            .filter_map(|f| ObjectUrl::parse(&f.url).ok())
            .map(|u| u.path().to_string())
            .collect::<HashSet<_>>();
        Ok::<_, String>((location, paths))
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<_>>()
    .await?;
    for (location, paths) in read {
        named.insert(folder_of(&location), paths);
    }
    let writing: HashSet<String> = claims
        .iter()
        .map(folder_of)
        .filter(|folder| !named.contains_key(folder))
        .collect();
    Ok(files
        .into_iter()
        .filter(|f| {
            let folder = folder_of(&f.location);
            match named.get(&folder) {
                Some(paths) => paths.contains(f.location.as_ref()),
                None => !writing.contains(&folder),
            }
        })
        .collect())
}

/// Registers a resolved table with DataFusion as a listing table.
pub async fn register_table(ctx: &SessionContext, table: &ResolvedTable) -> Result<()> {
    let table_err = |message: String| SquallError::Table {
        table: table.spec.name.clone(),
        message,
    };
    let listing_url = ListingTableUrl::parse(table.url.as_str())
        .map_err(|e| table_err(format!("invalid URL: {e}")))?;
    // The extension filter must match exactly what `resolve_table` kept.
    let extension = common_extension(&table.files);
    let format = file_format(
        table.format,
        table.compression,
        &table.spec.csv.clone().unwrap_or_default(),
    )?;
    let options = ListingOptions::new(format)
        .with_file_extension(extension)
        .with_table_partition_cols(table.partitions.clone());
    let state = ctx.state();
    let store = state
        .runtime_env()
        .object_store(listing_url.object_store())
        .map_err(|e| table_err(e.to_string()))?;
    // The files are known from `resolve_table`: no second listing.
    let schema_files = match (&table.sample, table.files.is_empty()) {
        (Some(sample), true) => std::slice::from_ref(sample),
        _ => table.files.as_slice(),
    };
    let inferred = options
        .format
        .infer_schema(&state, &store, schema_files)
        .await;
    let schema = match inferred {
        Ok(schema) => schema,
        Err(e) => {
            let culprit = unreadable_file(&state, &store, table).await;
            let what = culprit.unwrap_or_else(|| format!("its files at {}", table.url));
            return Err(table_err(format!("cannot read the schema of {what}: {e}")));
        }
    };
    // With a null marker the files are listed as text (see `csv_nulls`).
    let marker = table.spec.csv.as_ref().and_then(|c| c.null.as_deref());
    let listed = match marker {
        Some(_) => csv_nulls::text_schema(&schema),
        None => schema.clone(),
    };
    let config = ListingTableConfig::new(listing_url)
        .with_listing_options(options)
        .with_schema(listed);
    let listing = ListingTable::try_new(config).map_err(|e| table_err(e.to_string()))?;
    let provider: Arc<dyn TableProvider> = match marker {
        Some(marker) => Arc::new(NullMarkedTable::new(Arc::new(listing), &schema, marker)),
        None => Arc::new(listing),
    };
    ctx.register_table(table.spec.name.as_str(), provider)
        .map_err(|e| table_err(e.to_string()))?;
    Ok(())
}

/// The first of (at most 64 of) a table's files whose schema cannot be read, as a
/// URL, to name it in the error.
async fn unreadable_file(
    state: &datafusion::execution::SessionState,
    store: &Arc<dyn ObjectStore>,
    table: &ResolvedTable,
) -> Option<String> {
    let format = file_format(
        table.format,
        table.compression,
        &table.spec.csv.clone().unwrap_or_default(),
    )
    .ok()?;
    for file in table.files.iter().take(64) {
        if format
            .infer_schema(state, store, std::slice::from_ref(file))
            .await
            .is_err()
        {
            let mut url = table.url.clone();
            url.set_path(&format!("/{}", file.location));
            return Some(url.to_string());
        }
    }
    None
}

/// The extension (with its dot) all files share, or "" when they do not share one.
fn common_extension(files: &[ObjectMeta]) -> String {
    let ext = |f: &ObjectMeta| {
        f.location
            .filename()
            .and_then(|n| n.rsplit_once('.').map(|(_, e)| format!(".{e}")))
    };
    let first = files.first().and_then(ext);
    if files.iter().all(|f| ext(f) == first) {
        first.unwrap_or_default()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    #[test]
    fn parses_table_arguments() {
        let t: TableSpec = "lineitem=s3://b/li/".parse().unwrap();
        assert_eq!(t, TableSpec::new("lineitem", "s3://b/li/"));
        let t: TableSpec = "orders:csv=data/o.txt".parse().unwrap();
        assert_eq!(t.format, Some(TableFormat::Csv));
        assert!("noequals".parse::<TableSpec>().is_err());
        assert!("9x=a".parse::<TableSpec>().is_err());
        assert!(
            "x:xml=a"
                .parse::<TableSpec>()
                .unwrap_err()
                .to_string()
                .contains("xml")
        );
    }

    #[test]
    fn partition_arguments_name_their_table() {
        let mut one = vec![TableSpec::new("ev", "s3://b/ev/")];
        set_partitions(&mut one, &["year:int,month".into()]).unwrap();
        let columns = one[0].partitions.as_ref().unwrap();
        assert_eq!(columns.len(), 2);
        assert_eq!(columns[0].data_type, Some(DataType::Int64));
        let err = set_partitions(&mut one, &["day".into(), "EV=day".into()]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        set_csv_options(&mut one, &["delimiter=tab,header=false".into()]).unwrap();
        assert_eq!(one[0].csv.as_ref().map(|c| c.delimiter), Some(b'\t'));
        let mut two = vec![TableSpec::new("a", "x/"), TableSpec::new("b", "y/")];
        let err = set_partitions(&mut two, &["day".into()]).unwrap_err();
        assert!(err.to_string().contains("--partition TABLE=day"), "{err}");
        let err = set_partitions(&mut two, &["c=day".into()]).unwrap_err();
        assert!(err.to_string().contains("no table 'c'"), "{err}");
        set_partitions(&mut two, &["b=day:date".into()]).unwrap();
        assert!(two[0].partitions.is_none() && two[1].partitions.is_some());
    }

    #[tokio::test]
    async fn resolves_prefixes_and_infers_formats() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for key in [
            "t/a.csv",
            "t/b.csv",
            "t/_SUCCESS",
            "mixed/a.csv",
            "mixed/b.json",
        ] {
            store
                .put(&key.into(), PutPayload::from_static(b"x\n1\n"))
                .await
                .unwrap();
        }
        let guard = TableGuard::default();
        let t = resolve_table(&TableSpec::new("t", "memory:///t"), &store, &guard)
            .await
            .unwrap();
        assert_eq!(t.format, TableFormat::Csv);
        assert_eq!(t.files.len(), 2);
        assert_eq!(t.url.as_str(), "memory:///t/");

        let one = resolve_table(&TableSpec::new("t", "memory:///t/a.csv"), &store, &guard)
            .await
            .unwrap();
        assert_eq!(one.files.len(), 1);

        let err = resolve_table(&TableSpec::new("m", "memory:///mixed/"), &store, &guard)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("several formats"), "{err}");
        let err = resolve_table(&TableSpec::new("n", "memory:///nothing/"), &store, &guard)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("table 'n': no files"), "{err}");
        assert!(err.is_user_error());
    }

    #[tokio::test]
    async fn manifests_and_claims_decide_which_files_count() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let manifest = serde_json::json!({
            "job_id": "j", "rows": 2, "columns": [],
            "files": [{"url": "memory:///r/a/part-0.csv", "rows": 1, "bytes": 4}]
        });
        for (key, body) in [
            ("r/a/part-0.csv", "x\n1\n".to_string()),
            ("r/a/part-1.csv", "x\n2\n".to_string()),
            ("r/a/_squall_manifest.json", manifest.to_string()),
            ("r/b/part-0.csv", "x\n3\n".to_string()),
            ("r/b/_squall_claim.json", "{\"job_id\": \"k\"}".to_string()),
            ("r/c/part-0.csv", "x\n4\n".to_string()),
        ] {
            store
                .put(&key.into(), PutPayload::from(body))
                .await
                .unwrap();
        }
        let guard = TableGuard::default();
        let t = resolve_table(&TableSpec::new("r", "memory:///r/"), &store, &guard)
            .await
            .unwrap();
        let names: Vec<String> = t.files.iter().map(|f| f.location.to_string()).collect();
        // a: only what the manifest names; b: a job still writing; c: no marks.
        assert_eq!(names, ["r/a/part-0.csv", "r/c/part-0.csv"]);

        let bounded = TableGuard {
            max_files: Some(5),
            access: None,
        };
        let err = resolve_table(&TableSpec::new("r", "memory:///r/"), &store, &bounded)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("more than 5 files"), "{err}");
    }
}
