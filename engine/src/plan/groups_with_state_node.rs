//! Physical planning of a [`GroupsWithStateNode`] (`flat_map_groups_with_state`
//! and the operations built on it) into a [`StatefulExec`].

use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::error::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;

use crate::arbitrary::GroupStateTimeout;
pub use crate::arbitrary::GroupsWithStateNode;
use crate::error::SluiceError;
use crate::physical::StatefulExec;
use crate::state::StateStoreConfig;
use crate::stateful::{EventTimeKey, GroupsWithStateSpec, OperatorSpec};

/// Plan `node` over its physical `input` into a [`StatefulExec`], its input
/// hash-partitioned on the keys.
pub(super) fn plan_groups_with_state(
    node: &GroupsWithStateNode,
    input: Arc<dyn ExecutionPlan>,
    session: &dyn Session,
    config: StateStoreConfig,
) -> Result<StatefulExec> {
    let logical_schema = node.input.schema();
    let keys = node
        .keys
        .iter()
        .map(|k| session.create_physical_expr(k.clone(), logical_schema))
        .collect::<Result<Vec<_>>>()?;
    let key_names = node.keys.iter().map(|k| k.schema_name().to_string()).collect();
    let input_schema = input.schema();
    let event_time = input_schema
        .fields()
        .iter()
        .position(|f| super::analyze::column_is_watermark_column(&node.input, f.name()))
        .map(|index| EventTimeKey {
            index,
            expr: Arc::new(Column::new(input_schema.field(index).name(), index)) as Arc<dyn PhysicalExpr>,
        });
    if node.timeout == GroupStateTimeout::EventTime && event_time.is_none() {
        return Err(SluiceError::unsupported(format!(
            "{} with event-time timeouts (GroupStateTimeout::EventTime, TimeMode::EventTime) needs a watermark: declare one on the stream (with_watermark, or \
             WATERMARK FOR on the source) with the watermarked column kept in the grouped rows; event-time timeouts \
             fire when the watermark passes them",
            node.operation()
        ))
        .into());
    }
    let spec = OperatorSpec::GroupsWithState(Box::new(GroupsWithStateSpec {
        input_schema,
        output: Arc::clone(node.schema.inner()),
        keys,
        key_names,
        func: Arc::clone(&node.func),
        timeout: node.timeout,
        event_time,
        operation: node.operation(),
        every_key: node.every_key,
        config,
    }));
    spec.create()?;
    let (input, spec) = super::planner::partition_on(input, spec, config.num_partitions)?;
    let out = Arc::clone(node.schema.inner());
    Ok(StatefulExec::new(node.id, node.id.to_string(), Arc::new(spec), node.downstream, input, out))
}
