//! The table catalog: a table's schema, read from its files when it is put
//! (after its URL is checked like a job's) and kept, so listings read no files.

use super::api::{ColumnView, PutTable, SubmitJob, TableList, TableRef, TableView};
use super::core::Service;
use super::errors::ServiceError;
use super::store::{CatalogTable, now_ms};
use crate::engine::new_job_id;

impl Service {
    /// Every catalog table with its schema, by name.
    pub(crate) async fn tables(&self) -> Result<TableList, ServiceError> {
        let mut tables = Vec::new();
        for table in self.store.tables()? {
            tables.push(self.table_view(table).await?);
        }
        Ok(TableList { tables })
    }

    /// One catalog table with its schema.
    pub(crate) async fn table(&self, name: &str) -> Result<TableView, ServiceError> {
        let table = self
            .store
            .table(name)?
            .ok_or_else(|| ServiceError::UnknownTable {
                name: name.to_string(),
            })?;
        self.table_view(table).await
    }

    /// Adds or replaces a catalog table, its URL checked like a job's and its
    /// schema read from its files now (shown as read until it is put again).
    pub(crate) async fn put_table(
        &self,
        name: String,
        put: PutTable,
    ) -> Result<TableView, ServiceError> {
        let mut table = CatalogTable {
            name,
            url: put.url,
            format: put.format.map(|f| f.to_ascii_lowercase()),
            options: serde_json::json!({}),
            created_at_ms: now_ms(),
            columns: None,
        };
        let view = self.table_view(table.clone()).await?;
        // Stored as checked: the URL normalised.
        table.url = view.url.clone();
        table.columns =
            Some(
                serde_json::to_value(&view.columns).map_err(|source| ServiceError::Encode {
                    what: "a table's columns".into(),
                    source,
                })?,
            );
        self.store.put_table(&table)?;
        Ok(view)
    }

    /// Removes a catalog table (its files stay).
    pub(crate) fn delete_table(&self, name: &str) -> Result<(), ServiceError> {
        if self.store.delete_table(name)? {
            Ok(())
        } else {
            Err(ServiceError::UnknownTable {
                name: name.to_string(),
            })
        }
    }

    /// A catalog table with its schema: as stored when it was put, else read
    /// from its files now.
    async fn table_view(&self, table: CatalogTable) -> Result<TableView, ServiceError> {
        if let Some(columns) = table
            .columns
            .clone()
            .and_then(|c| serde_json::from_value::<Vec<ColumnView>>(c).ok())
        {
            return Ok(TableView {
                name: table.name,
                url: table.url,
                format: table.format,
                columns,
                created_at_ms: table.created_at_ms,
            });
        }
        let submitted = SubmitJob {
            sql: format!("SELECT * FROM {}", table.name),
            tables: vec![TableRef {
                name: table.name.clone(),
                url: Some(table.url.clone()),
                format: table.format.clone(),
            }],
            output: None,
            options: Default::default(),
            labels: Default::default(),
        };
        let mut request = self.request(&submitted, &new_job_id())?;
        // Reading a schema is not a scan: no scan limit.
        request.scan_limit_bytes = None;
        let planned = self.engine.check(&request).await?;
        Ok(TableView {
            name: table.name,
            url: request.tables[0].url.clone(),
            format: table.format,
            columns: ColumnView::of(&planned.dag.schema),
            created_at_ms: table.created_at_ms,
        })
    }
}
