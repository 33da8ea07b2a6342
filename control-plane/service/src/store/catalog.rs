//! The table catalog in the job store: named tables (URL, format, options,
//! the columns read when they were put, their owner), paged by name.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{JobStore, Result, StoreError, page, sqlite};

/// A named table of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogTable {
    pub name: String,
    pub url: String,
    pub format: Option<String>,
    pub options: serde_json::Value,
    pub created_at_ms: i64,
    /// The columns read from the files when the table was put (None in rows
    /// stored before they were kept).
    pub columns: Option<serde_json::Value>,
    /// The principal that put it.
    pub owner: String,
}

impl JobStore {
    /// Adds or replaces a catalog table unless `max_tables` are stored
    /// already (false then; replacing one never counts).
    pub fn put_table(&self, table: &CatalogTable, max_tables: usize) -> Result<bool> {
        let changed = self
            .conn()
            .execute(
                "INSERT OR REPLACE INTO catalog
                   (name, url, format, options, created_at_ms, columns, owner)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                 WHERE EXISTS (SELECT 1 FROM catalog WHERE name = ?1)
                    OR (SELECT count(*) FROM catalog) < ?8",
                params![
                    table.name,
                    table.url,
                    table.format,
                    table.options.to_string(),
                    table.created_at_ms,
                    table.columns.as_ref().map(|c| c.to_string()),
                    table.owner,
                    max_tables as i64,
                ],
            )
            .map_err(sqlite(format!("store table {}", table.name)))?;
        Ok(changed == 1)
    }

    pub fn table(&self, name: &str) -> Result<Option<CatalogTable>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {TABLE_COLUMNS} FROM catalog WHERE name = ?1"),
                params![name],
                raw_table,
            )
            .optional()
            .map_err(sqlite(format!("read table {name}")))?;
        row.map(into_table).transpose()
    }

    /// Catalog tables by name after `after`, at most `limit`, and the name
    /// to continue after if there are more.
    pub fn tables(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<CatalogTable>, Option<String>)> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {TABLE_COLUMNS} FROM catalog WHERE ?1 IS NULL OR name > ?1
                 ORDER BY name LIMIT ?2"
            ))
            .map_err(sqlite("list tables"))?;
        let rows = stmt
            .query_map(params![after, limit.saturating_add(1) as i64], raw_table)
            .map_err(sqlite("list tables"))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sqlite("list tables"))?;
        let tables = rows
            .into_iter()
            .map(into_table)
            .collect::<Result<Vec<_>>>()?;
        Ok(page(tables, limit, |t| t.name.clone()))
    }

    /// Removes a catalog table; false if there was none.
    pub fn delete_table(&self, name: &str) -> Result<bool> {
        let changed = self
            .conn()
            .execute("DELETE FROM catalog WHERE name = ?1", params![name])
            .map_err(sqlite(format!("delete table {name}")))?;
        Ok(changed == 1)
    }
}

type RawTable = (
    String,
    String,
    Option<String>,
    String,
    i64,
    Option<String>,
    String,
);

/// The columns `raw_table` reads, in its order.
const TABLE_COLUMNS: &str = "name, url, format, options, created_at_ms, columns, owner";

fn raw_table(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawTable> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn into_table(
    (name, url, format, options, created_at_ms, columns, owner): RawTable,
) -> Result<CatalogTable> {
    let corrupt = |what: &str, e: serde_json::Error| StoreError::Corrupt {
        what: format!("table {name}"),
        message: format!("{what} are not JSON: {e}"),
    };
    let options = serde_json::from_str(&options).map_err(|e| corrupt("options", e))?;
    let columns = columns
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| corrupt("columns", e))?;
    Ok(CatalogTable {
        name,
        url,
        format,
        options,
        created_at_ms,
        columns,
        owner,
    })
}
