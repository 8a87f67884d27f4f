//! [`GroupsWithStateNode`]: `flat_map_groups_with_state` in a logical plan
//! (Spark's `FlatMapGroupsWithState`): a user function called per key with
//! the key's rows and its state.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};

use super::{GroupFunction, GroupStateTimeout};
use crate::options::OutputMode;

/// A user function over groups of a stream, keeping state per group.
#[derive(Clone)]
pub struct GroupsWithStateNode {
    /// The rows grouped.
    pub input: LogicalPlan,
    /// The key columns (over `input`).
    pub keys: Vec<Expr>,
    /// The rows the function returns.
    pub schema: DFSchemaRef,
    /// The function.
    pub func: Arc<dyn GroupFunction>,
    /// The output mode the operation declares (append or update).
    pub mode: OutputMode,
    /// `map_groups_with_state` (one row per call, update mode only).
    pub is_map: bool,
    /// Call the function for every key with state in every batch
    /// (`update_state_by_key`).
    pub every_key: bool,
    /// The operation's name in messages.
    pub operation: &'static str,
    /// When groups time out.
    pub timeout: GroupStateTimeout,
    /// Operator id (set when the plan's stateful operators are numbered).
    pub id: usize,
    /// Fed by another stateful operator.
    pub downstream: bool,
}

impl GroupsWithStateNode {
    /// The operation's name in messages.
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

impl fmt::Debug for GroupsWithStateNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupsWithStateNode")
            .field("keys", &self.keys)
            .field("state", &self.func.state_tag())
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("id", &self.id)
            .finish()
    }
}

impl PartialEq for GroupsWithStateNode {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input
            && self.keys == other.keys
            && self.schema == other.schema
            && Arc::ptr_eq(&self.func, &other.func)
            && self.mode == other.mode
            && self.is_map == other.is_map
            && self.every_key == other.every_key
            && self.timeout == other.timeout
            && self.id == other.id
            && self.downstream == other.downstream
    }
}

impl Eq for GroupsWithStateNode {}

impl Hash for GroupsWithStateNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.keys.hash(state);
        self.id.hash(state);
        self.timeout.hash(state);
    }
}

impl PartialOrd for GroupsWithStateNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal).or_else(|| self.id.partial_cmp(&other.id).filter(|o| o.is_ne()))
    }
}

impl UserDefinedLogicalNodeCore for GroupsWithStateNode {
    fn name(&self) -> &str {
        "GroupsWithState"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.keys.clone()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "GroupsWithState: {}, operator={}, keys=[{}], state={}, mode={}, timeout={}",
            self.operation(),
            self.id,
            self.keys.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
            self.func.state_tag(),
            self.mode,
            self.timeout
        )
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let (Some(input), true) = (inputs.pop(), inputs.is_empty()) else {
            return Err(DataFusionError::Internal(format!("{} takes exactly one input", self.name())));
        };
        Ok(Self { input, keys: exprs, ..self.clone() })
    }
}
