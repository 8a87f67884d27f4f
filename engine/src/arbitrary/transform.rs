//! [`transform`]: any batch DataFrame operation per micro-batch (DStream's
//! `transform`), such as a join with a table that changes between batches.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use futures::future::BoxFuture;

use crate::error::{Result, SluiceError};

/// The user's function: the micro-batch's rows as a batch DataFrame and the
/// batch id, to the DataFrame whose rows the stream emits.
pub type TransformFn = Arc<dyn Fn(DataFrame, u64) -> BoxFuture<'static, Result<DataFrame>> + Send + Sync>;

/// Run `func` on every micro-batch of `df`: it gets the batch's rows as a
/// batch DataFrame (in `df`'s session, so its tables and functions are
/// there) and the batch id, and returns a DataFrame whose rows are the
/// batch's output. `func` is called once at definition with no rows to learn
/// the output schema; every batch must keep that schema.
///
/// The query after `transform` is stateless per batch: `func` sees one
/// batch's rows. Stateful operators may follow it (they see its output as a
/// stream).
pub async fn transform<F, Fut>(df: DataFrame, func: F) -> Result<DataFrame>
where
    F: Fn(DataFrame, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<DataFrame>> + Send + 'static,
{
    let func: TransformFn = Arc::new(move |df, id| Box::pin(func(df, id)));
    let (state, plan) = df.into_parts();
    let state = Arc::new(state);
    let input_schema = Arc::clone(plan.schema().inner());
    let probe = batch_frame(&state, input_schema, vec![])?;
    let probed = func(probe, 0).await.map_err(|e| {
        SluiceError::plan(format!("transform: the function failed on the empty batch it is probed with: {e}"))
    })?;
    let schema = Arc::new(probed.schema().clone().strip_qualifiers());
    let node = TransformNode { input: plan, func, schema, state: Arc::clone(&state) };
    let plan = LogicalPlan::Extension(Extension { node: Arc::new(node) });
    Ok(DataFrame::new(state.as_ref().clone(), plan))
}

/// `rows` (of `schema`) as a batch DataFrame in `state`'s session.
pub(crate) fn batch_frame(
    state: &SessionState,
    schema: datafusion::arrow::datatypes::SchemaRef,
    rows: Vec<RecordBatch>,
) -> Result<DataFrame> {
    let ctx = SessionContext::new_with_state(state.clone());
    let table = MemTable::try_new(schema, vec![rows])?;
    Ok(ctx.read_table(Arc::new(table))?)
}

/// `transform` in a logical plan.
#[derive(Clone)]
pub struct TransformNode {
    /// The stream transformed.
    pub input: LogicalPlan,
    /// The function.
    pub func: TransformFn,
    /// The schema of its output.
    pub schema: DFSchemaRef,
    /// The session its batch DataFrames are built in.
    pub state: Arc<SessionState>,
}

impl fmt::Debug for TransformNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransformNode").field("schema", &self.schema).finish()
    }
}

impl PartialEq for TransformNode {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input && Arc::ptr_eq(&self.func, &other.func) && self.schema == other.schema
    }
}

impl Eq for TransformNode {}

impl Hash for TransformNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.schema.hash(state);
    }
}

impl PartialOrd for TransformNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal)
    }
}

impl UserDefinedLogicalNodeCore for TransformNode {
    fn name(&self) -> &str {
        "Transform"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Transform: a function per micro-batch")
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> datafusion::error::Result<Self> {
        let (Some(input), true) = (inputs.pop(), inputs.is_empty()) else {
            return Err(SluiceError::internal("Transform takes exactly one input").into());
        };
        Ok(Self { input, ..self.clone() })
    }
}
