//! The table catalog: a table's schema, read from its files when it is put
//! (after its URL is checked like a job's of whoever puts it) and kept, so
//! listings read no files. Every principal reads the catalog; a table is
//! changed or removed by the principal that put it, or an admin.

use crate::api::{ColumnView, PutTable, SubmitJob, TableList, TableRef, TableView};
use crate::core::Service;
use crate::errors::ServiceError;
use crate::principals::Principal;
use crate::store::{CatalogTable, now_ms};
use crate::submission::TableExtras;
use squall_engine::engine::new_job_id;
use squall_engine::tables::check_table_name;

impl Service {
    /// Catalog tables with their schemas, by name, a page at a time (every
    /// principal reads the whole catalog).
    pub(crate) async fn tables(
        &self,
        caller: &Principal,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TableList, ServiceError> {
        let (found, next) = self.store.tables(after, limit)?;
        let mut tables = Vec::with_capacity(found.len());
        for table in found {
            tables.push(self.table_view(caller, table).await?);
        }
        Ok(TableList { tables, next })
    }

    /// One catalog table with its schema.
    pub(crate) async fn table(
        &self,
        caller: &Principal,
        name: &str,
    ) -> Result<TableView, ServiceError> {
        let table = self
            .store
            .table(name)?
            .ok_or_else(|| ServiceError::UnknownTable {
                name: name.to_string(),
            })?;
        self.table_view(caller, table).await
    }

    /// Adds or replaces a catalog table, its URL checked like a job's of
    /// `caller` and its schema read from its files now (shown as read until
    /// it is put again). A table another principal put is a user's to
    /// replace only if it is an admin.
    pub(crate) async fn put_table(
        &self,
        caller: &Principal,
        name: String,
        put: PutTable,
    ) -> Result<TableView, ServiceError> {
        check_table_name(&name)?;
        if let Some(existing) = self.store.table(&name)? {
            self.check_owner(caller, &format!("catalog table '{name}'"), &existing.owner)?;
        }
        let options = TableExtras {
            partitions: put.partitions,
            csv: put.csv,
        }
        .to_options();
        let mut table = CatalogTable {
            name,
            url: put.url,
            format: put.format.map(|f| f.to_ascii_lowercase()),
            options,
            created_at_ms: now_ms(),
            columns: None,
            owner: caller.name.clone(),
        };
        let view = self.table_view(caller, table.clone()).await?;
        // Stored as checked: the URL normalised.
        table.url = view.url.clone();
        table.columns =
            Some(
                serde_json::to_value(&view.columns).map_err(|source| ServiceError::Encode {
                    what: "a table's columns".into(),
                    source,
                })?,
            );
        let max = self.config.limits.max_tables;
        if !self.store.put_table(&table, max)? {
            return Err(ServiceError::TooMany {
                what: "catalog tables".into(),
                max,
            });
        }
        Ok(view)
    }

    /// Removes a catalog table (its files stay): the principal's that put
    /// it, or any with an admin's token.
    pub(crate) fn delete_table(&self, caller: &Principal, name: &str) -> Result<(), ServiceError> {
        let unknown = || ServiceError::UnknownTable {
            name: name.to_string(),
        };
        let table = self.store.table(name)?.ok_or_else(unknown)?;
        self.check_owner(caller, &format!("catalog table '{name}'"), &table.owner)?;
        if self.store.delete_table(name)? {
            Ok(())
        } else {
            Err(unknown())
        }
    }

    /// Refuses a change by `caller` to what `owner` owns, unless it is an admin.
    pub(super) fn check_owner(
        &self,
        caller: &Principal,
        what: &str,
        owner: &str,
    ) -> Result<(), ServiceError> {
        if caller.owns(owner) {
            return Ok(());
        }
        Err(ServiceError::NotOwner {
            caller: caller.name.clone(),
            what: what.to_string(),
            owner: owner.to_string(),
        })
    }

    /// A catalog table with its schema: as stored when it was put, else read
    /// from its files now.
    async fn table_view(
        &self,
        caller: &Principal,
        table: CatalogTable,
    ) -> Result<TableView, ServiceError> {
        let extras = TableExtras::of_catalog(&table.options);
        if let Some(columns) = table
            .columns
            .clone()
            .and_then(|c| serde_json::from_value::<Vec<ColumnView>>(c).ok())
        {
            return Ok(TableView {
                name: table.name,
                owner: table.owner,
                url: table.url,
                format: table.format,
                partitions: extras.partitions,
                csv: extras.csv,
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
                partitions: extras.partitions.clone(),
                csv: extras.csv.clone(),
            }],
            output: None,
            options: Default::default(),
            labels: Default::default(),
            client_request_token: None,
            wait_timeout: None,
        };
        let mut request = self.request(caller, &submitted, &new_job_id())?;
        // Reading a schema is not a scan: no scan limit.
        request.scan_limit_bytes = None;
        let planned = self.engine.check(&request).await?;
        Ok(TableView {
            name: table.name,
            owner: table.owner,
            url: request.tables[0].url.clone(),
            format: table.format,
            partitions: extras.partitions,
            csv: extras.csv,
            columns: ColumnView::of(&planned.dag.schema),
            created_at_ms: table.created_at_ms,
        })
    }
}
