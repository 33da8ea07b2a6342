//! CSV tables with a null marker (`null=NA`): read as text, the marker made
//! NULL, then cast to the types the files hold.
//!
//! # What belongs here
//! DataFusion 55's CSV reader takes a null marker only to infer a schema, not
//! when it reads (its reader builder never sets one), so an `NA` in an integer
//! column fails the read. A table with a marker is therefore registered as a
//! listing table whose file columns are all text, behind a provider with the
//! inferred types whose scan projects `CAST(NULLIF(column, 'NA') AS type)`
//! over the listing's scan. Filters on Hive partition columns still reach the
//! listing (they prune files); the others run above the projection.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{Column, DFSchema, Result};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::functions::expr_fn::nullif;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, cast, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

/// The file schema a table with a null marker is listed with: `typed`'s
/// columns, every one text.
pub fn text_schema(typed: &Schema) -> SchemaRef {
    let fields: Vec<Field> = typed
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), DataType::Utf8, true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// A CSV table read as text (`inner`), presented with its inferred types
/// and `marker` fields read as NULL.
#[derive(Debug)]
pub struct NullMarkedTable {
    inner: Arc<dyn TableProvider>,
    /// The typed schema: the files' columns, then the partition columns.
    schema: SchemaRef,
    /// How many of the columns come from the files.
    file_columns: usize,
    marker: String,
}

impl NullMarkedTable {
    /// `inner` lists the files with [`text_schema`]`(typed)`, then any
    /// partition columns; `typed` is the files' schema inferred with the
    /// marker taken for NULL.
    pub fn new(inner: Arc<dyn TableProvider>, typed: &Schema, marker: &str) -> Self {
        let file_columns = typed.fields().len();
        let fields: Vec<Arc<Field>> = typed
            .fields()
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
            .chain(inner.schema().fields().iter().skip(file_columns).cloned())
            .collect();
        Self {
            inner,
            schema: Arc::new(Schema::new(fields)),
            file_columns,
            marker: marker.to_string(),
        }
    }

    /// Whether `filter` reads only partition columns (the listing prunes by
    /// those; the text columns' filters would compare text).
    fn on_partitions(&self, filter: &Expr) -> bool {
        let partitions: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .skip(self.file_columns)
            .map(|f| f.name().as_str())
            .collect();
        filter
            .column_refs()
            .iter()
            .all(|c| partitions.contains(&c.name.as_str()))
    }
}

#[async_trait]
impl TableProvider for NullMarkedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let mut support = vec![TableProviderFilterPushDown::Unsupported; filters.len()];
        let (indices, on_partitions): (Vec<usize>, Vec<&Expr>) = filters
            .iter()
            .enumerate()
            .filter(|(_, f)| self.on_partitions(f))
            .map(|(i, f)| (i, *f))
            .unzip();
        if !on_partitions.is_empty() {
            let inner = self.inner.supports_filters_pushdown(&on_partitions)?;
            for (i, s) in indices.into_iter().zip(inner) {
                support[i] = s;
            }
        }
        Ok(support)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let pushed: Vec<Expr> = filters
            .iter()
            .filter(|f| self.on_partitions(f))
            .cloned()
            .collect();
        let text = self
            .inner
            .scan(state, Some(&columns), &pushed, limit)
            .await?;
        if columns.iter().all(|&c| c >= self.file_columns) {
            return Ok(text);
        }
        let text_schema = DFSchema::try_from(text.schema())?;
        let mut exprs = Vec::with_capacity(columns.len());
        for (position, &index) in columns.iter().enumerate() {
            let field = self.schema.field(index);
            let read = Expr::Column(Column::new_unqualified(
                text.schema().field(position).name(),
            ));
            let typed = if index < self.file_columns {
                let nulled = nullif(read, lit(self.marker.as_str()));
                if field.data_type() == &DataType::Utf8 {
                    nulled
                } else {
                    cast(nulled, field.data_type().clone())
                }
            } else {
                read
            };
            let physical = state.create_physical_expr(typed, &text_schema)?;
            exprs.push(ProjectionExpr::new(physical, field.name().clone()));
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, text)?))
    }
}
