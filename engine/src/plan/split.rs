//! Splitting a streaming plan at its stateful operator.
//!
//! A stateful query has the shape `post(stateful(pre))`: `pre` is stateless
//! and reads the streams, `stateful` is an aggregation or a `DISTINCT`, and
//! `post` is made of projections, filters (HAVING), sorts and limits. The
//! stateful node is replaced in `post` by a scan of the rows it emits.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Column;
use datafusion::datasource::{provider_as_source, TableType};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Projection};
use datafusion::physical_plan::ExecutionPlan;

use super::analyze::is_streaming;
use crate::error::{Result, SluiceError};
use crate::physical::StreamScanExec;

/// The micro-batch input name under which stateful operator `k`'s output
/// is handed to the rest of the plan.
pub fn state_output(k: usize) -> String {
    format!("__sluice_state_output_{k}")
}

/// A streaming plan cut at its stateful node.
#[derive(Debug)]
pub struct Split {
    /// The stateful node (`Aggregate` or `Distinct`), with its input.
    pub stateful: LogicalPlan,
    /// The plan above it, reading the stateful node's output.
    pub post: LogicalPlan,
    /// Schema of the rows the stateful node hands to `post`.
    pub slot_schema: SchemaRef,
    /// Input name of the slot `post` reads.
    pub slot: String,
}

fn is_stateful(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(a) => is_streaming(&a.input),
        LogicalPlan::Distinct(d) => is_streaming(d.input()),
        _ => false,
    }
}

fn contains_stateful(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|n| {
        found |= is_stateful(n);
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

fn find(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    if is_stateful(plan) {
        return Ok(Some(plan.clone()));
    }
    match plan {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_) => find(plan.inputs()[0]),
        other if contains_stateful(other) => Err(SluiceError::unsupported(format!(
            "an aggregation or DISTINCT below {} is not supported in a streaming query yet; only projections, \
             filters, ORDER BY and LIMIT may follow it",
            other.display()
        ))),
        _ => Ok(None),
    }
}

/// Cut `plan` at its (outermost) stateful node, if it has one; `post`
/// reads that node's output from the slot called `slot`.
pub fn split(plan: &LogicalPlan, slot: &str) -> Result<Option<Split>> {
    let Some(stateful) = find(plan)? else { return Ok(None) };
    let schema = stateful.schema();
    let slot_schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(format!("__c{i}"), f.data_type().clone(), f.is_nullable()))
            .collect::<Vec<_>>(),
    ));
    let table = SlotTable { name: slot.to_string(), schema: Arc::clone(&slot_schema) };
    let scan = LogicalPlanBuilder::scan(slot, provider_as_source(Arc::new(table)), None)?.build()?;
    let exprs: Vec<Expr> = schema
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            Expr::Column(Column::new_unqualified(format!("__c{i}"))).alias_qualified(q.cloned(), f.name())
        })
        .collect();
    let replacement = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(scan))?);
    let target = stateful.clone();
    let post = plan
        .clone()
        .transform_down(|node| {
            Ok(if node == target {
                Transformed::new(replacement.clone(), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(node)
            })
        })?
        .data;
    Ok(Some(Split { stateful, post, slot_schema, slot: slot.to_string() }))
}

/// The table the post-plan reads the stateful node's output from.
#[derive(Debug)]
struct SlotTable {
    name: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for SlotTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(StreamScanExec::try_new(self.name.clone(), self.schema(), projection.cloned())?))
    }
}
