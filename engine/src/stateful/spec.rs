//! [`OperatorSpec`]: the immutable description of a stateful operator, as
//! planned. The plan holds specs; the runtime builds one operator instance
//! per state partition from them.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;

use super::{
    AggregateParts, ChangelogSpec, DedupSpec, EventTimeKey, GroupsWithStateSpec, JoinSpec, LiveAggregate,
    OverWindowSpec, PaneAggregate, SessionAggregate, SessionColumns, StatefulOperator, StreamingAggregate,
    StreamingChangelog, StreamingDedup, StreamingGroupsWithState, StreamingJoin, StreamingLimit, StreamingOverWindow,
    StreamingTopN, TopNSpec,
};
use crate::error::Result;
use crate::options::OutputMode;
use crate::state::StateStoreConfig;

/// What a stateful operator is, before any state is attached.
#[derive(Debug, Clone)]
pub enum OperatorSpec {
    /// A streaming aggregation (`GROUP BY`, windows).
    Aggregate {
        /// The planned aggregation.
        parts: AggregateParts,
        /// The grouping key carrying event time.
        event_time: Option<EventTimeKey>,
        /// Output mode.
        mode: OutputMode,
        /// Its input is partial states, partitioned on the key columns.
        partial_input: bool,
        /// State store settings.
        config: StateStoreConfig,
    },
    /// A session-window aggregation.
    Session {
        /// The planned aggregation.
        parts: AggregateParts,
        /// Where the session bounds are among the keys.
        session: SessionColumns,
        /// The grouping key carrying event time.
        event_time: Option<EventTimeKey>,
        /// Output mode.
        mode: OutputMode,
        /// State store settings.
        config: StateStoreConfig,
    },
    /// Streaming deduplication (`DISTINCT`, `DISTINCT ON`).
    Dedup {
        /// Schema of its input.
        schema: SchemaRef,
        /// Key and output columns.
        spec: DedupSpec,
        /// The watermarked column.
        event_time: Option<EventTimeKey>,
        /// State store settings.
        config: StateStoreConfig,
    },
    /// A stream-stream join (two inputs).
    Join(Box<JoinSpec>),
    /// Top-N per partition (`ROW_NUMBER()` ... filtered by rank).
    TopN(Box<TopNSpec>),
    /// An update-mode operator's changing rows as retractions and additions.
    Changelog(Box<ChangelogSpec>),
    /// Window functions over whole partitions (`AVG(x) OVER (...)`).
    OverWindow(Box<OverWindowSpec>),
    /// A user function per key with state (`flat_map_groups_with_state`).
    GroupsWithState(Box<GroupsWithStateSpec>),
    /// `LIMIT` / `OFFSET` over the whole stream.
    Limit {
        /// Rows skipped.
        skip: u64,
        /// Rows passed after them.
        fetch: Option<u64>,
        /// State store settings.
        config: StateStoreConfig,
    },
}

/// An operator as an earlier Sluice ran it, over the row store: an
/// aggregation ([`StreamingAggregate`]), or a join whose state is rows.
#[derive(Debug, Clone)]
pub enum RowStoreOperator {
    /// An aggregation kept as panes or live groups.
    Aggregate {
        /// Its aggregation.
        parts: AggregateParts,
        /// Its event-time key.
        event_time: Option<EventTimeKey>,
        /// Its output mode.
        mode: OutputMode,
        /// Whether its input is partial states.
        partial_input: bool,
        /// State store settings.
        config: StateStoreConfig,
    },
    /// A stream-stream join kept in chunks.
    Join(Box<JoinSpec>),
}

impl RowStoreOperator {
    /// Whether a checkpoint whose stored layout operator is `operator` was
    /// written by this operator over the row store.
    pub fn wrote(&self, operator: &str) -> bool {
        match self {
            Self::Aggregate { .. } => operator == "aggregate",
            Self::Join(_) => super::join::is_row_store_layout(operator),
        }
    }

    /// A new instance (one per state partition), without state.
    pub fn create(&self) -> Result<Box<dyn StatefulOperator>> {
        match self {
            Self::Aggregate { parts, event_time, mode, partial_input, config } => {
                let op = StreamingAggregate::try_new(parts.clone(), event_time.clone(), *mode, *config)?;
                Ok(Box::new(if *partial_input { op.with_partial_input() } else { op }))
            }
            Self::Join(spec) => Ok(Box::new(StreamingJoin::try_new_row_store(spec.as_ref().clone())?)),
        }
    }
}

impl OperatorSpec {
    /// A new operator instance (one per state partition), without state.
    pub fn create(&self) -> Result<Box<dyn StatefulOperator>> {
        Ok(match self.clone() {
            Self::Aggregate { parts, event_time: Some(et), mode, partial_input, config }
                if PaneAggregate::applies(&parts, Some(&et), mode, partial_input) =>
            {
                Box::new(PaneAggregate::try_new(parts, et, config)?)
            }
            Self::Aggregate { parts, event_time: None, mode, partial_input, config }
                if LiveAggregate::applies(&parts, None, mode, partial_input) =>
            {
                Box::new(LiveAggregate::try_new(parts, mode, config)?)
            }
            Self::Aggregate { parts, event_time, mode, partial_input, config } => {
                let op = StreamingAggregate::try_new(parts, event_time, mode, config)?;
                Box::new(if partial_input { op.with_partial_input() } else { op })
            }
            Self::Session { parts, session, event_time, mode, config } => {
                Box::new(SessionAggregate::try_new(parts, session, event_time, mode, config)?)
            }
            Self::Dedup { schema, spec, event_time, config } => {
                Box::new(StreamingDedup::try_new(&schema, spec, event_time, config)?)
            }
            Self::Limit { skip, fetch, config } => Box::new(StreamingLimit::new(skip, fetch, config)),
            Self::Join(spec) => Box::new(StreamingJoin::try_new(*spec)?),
            Self::TopN(spec) => Box::new(StreamingTopN::try_new(*spec)?),
            Self::Changelog(spec) => Box::new(StreamingChangelog::try_new(*spec)?),
            Self::OverWindow(spec) => Box::new(StreamingOverWindow::try_new(*spec)?),
            Self::GroupsWithState(spec) => Box::new(StreamingGroupsWithState::try_new(*spec)?),
        })
    }

    /// Whether this is an aggregation kept as live window panes
    /// ([`PaneAggregate`]).
    pub fn uses_panes(&self) -> bool {
        matches!(self, Self::Aggregate { parts, event_time, mode, partial_input, .. }
            if PaneAggregate::applies(parts, event_time.as_ref(), *mode, *partial_input))
    }

    /// Whether this is an aggregation kept as a live group table
    /// ([`LiveAggregate`]).
    pub fn uses_live_groups(&self) -> bool {
        matches!(self, Self::Aggregate { parts, event_time, mode, partial_input, .. }
            if LiveAggregate::applies(parts, event_time.as_ref(), *mode, *partial_input))
    }

    /// For an aggregation kept as panes or live groups, and a join kept in
    /// chunks, the same operator over the row store (the layouts
    /// `aggregate` and `stream-stream join (...)`), which checkpoints
    /// written before those existed hold.
    pub fn row_store_operator(&self) -> Option<RowStoreOperator> {
        match self {
            Self::Aggregate { parts, event_time, mode, partial_input, config }
                if self.uses_panes() || self.uses_live_groups() =>
            {
                Some(RowStoreOperator::Aggregate {
                    parts: parts.clone(),
                    event_time: event_time.clone(),
                    mode: *mode,
                    partial_input: *partial_input,
                    config: *config,
                })
            }
            Self::Join(spec) => Some(RowStoreOperator::Join(spec.clone())),
            _ => None,
        }
    }

    /// The same operator keeping its state in `n` partitions.
    pub fn with_state_partitions(mut self, n: usize) -> Self {
        match &mut self {
            Self::Aggregate { config, .. }
            | Self::Session { config, .. }
            | Self::Dedup { config, .. }
            | Self::Limit { config, .. } => config.num_partitions = n,
            Self::Join(spec) => spec.config.num_partitions = n,
            Self::TopN(spec) => spec.config.num_partitions = n,
            Self::Changelog(spec) => spec.config.num_partitions = n,
            Self::OverWindow(spec) => spec.config.num_partitions = n,
            Self::GroupsWithState(spec) => spec.config.num_partitions = n,
        }
        self
    }

    /// Name of the physical node in `EXPLAIN`.
    pub fn exec_name(&self) -> &'static str {
        match self {
            Self::Aggregate { .. } => "StreamingAggregateExec",
            Self::Session { .. } => "SessionWindowAggregateExec",
            Self::Dedup { .. } => "StreamingDedupExec",
            Self::Limit { .. } => "StreamingLimitExec",
            Self::Join(_) => "StreamingSymmetricHashJoinExec",
            Self::TopN(_) => "StreamingTopNExec",
            Self::Changelog(_) => "StreamingChangelogExec",
            Self::OverWindow(_) => "StreamingOverWindowExec",
            Self::GroupsWithState(_) => "FlatMapGroupsWithStateExec",
        }
    }

    /// Whether a watermark advance alone can make output or eviction due.
    pub fn watermark_driven(&self) -> bool {
        match self {
            Self::Aggregate { event_time, mode, .. } => event_time.is_some() && *mode != OutputMode::Complete,
            Self::Session { event_time, mode, .. } => event_time.is_some() && *mode != OutputMode::Complete,
            Self::Dedup { event_time, .. } => event_time.is_some(),
            Self::Limit { .. } => false,
            Self::Join(spec) => spec.watermark_driven(),
            Self::TopN(spec) => spec.event_time.is_some(),
            Self::Changelog(_) | Self::OverWindow(_) => false,
            Self::GroupsWithState(spec) => spec.timeout == crate::arbitrary::GroupStateTimeout::EventTime,
        }
    }

    /// The key expressions of a join's right input (empty for one-input
    /// operators).
    pub fn right_key_exprs(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        match self {
            Self::Join(spec) => spec.right.keys.clone(),
            _ => vec![],
        }
    }

    /// How far behind the input watermark the operator's output rows may be
    /// in event time (≤ 0; only a join's range condition makes it so): the
    /// operator after it judges by the watermark shifted by this.
    pub fn output_watermark_offset_us(&self) -> i64 {
        match self {
            Self::Join(spec) => spec.output_watermark_offset_us(),
            _ => 0,
        }
    }

    /// What `EXPLAIN` shows besides keys and the watermark rule (a join's
    /// type and pair condition).
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Join(spec) => Some(match &spec.pair_filter {
                Some(f) => format!("type={}, filter={f}", spec.join_type),
                None => format!("type={}", spec.join_type),
            }),
            Self::TopN(spec) => Some(format!(
                "{}() <= {}, order=[{}]",
                spec.kind.name(),
                spec.n,
                spec.order.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
            )),
            Self::GroupsWithState(spec) => {
                Some(format!("{}, state={}, timeout={}", spec.operation, spec.func.state_tag(), spec.timeout))
            }
            Self::OverWindow(spec) => Some(format!(
                "[{}], order=[{}]",
                spec.windows.iter().map(|w| w.name().to_string()).collect::<Vec<_>>().join(", "),
                spec.order.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
            )),
            _ => None,
        }
    }

    /// The schema of the rows the operator drops as late, when it is not
    /// that of its input (a join's: both sides' columns, the other side NULL).
    pub fn late_rows_schema(&self) -> Option<SchemaRef> {
        match self {
            Self::Join(spec) => Some(Arc::clone(&spec.joined_schema)),
            _ => None,
        }
    }

    /// The expressions (over the operator's input) its state is keyed by:
    /// the input is hash-partitioned on them, so each state partition sees
    /// all rows of its keys. Empty: one partition holds all state.
    pub fn key_exprs(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        match self {
            // Partial states: the keys are their first columns.
            Self::Aggregate { parts, partial_input: true, .. } => parts
                .group_by
                .expr()
                .iter()
                .enumerate()
                .map(|(i, (_, name))| Arc::new(Column::new(name, i)) as Arc<dyn PhysicalExpr>)
                .collect(),
            Self::Aggregate { parts, .. } => parts.group_by.expr().iter().map(|(e, _)| Arc::clone(e)).collect(),
            Self::Session { parts, session, .. } => parts
                .group_by
                .expr()
                .iter()
                .enumerate()
                .filter(|(i, _)| !session.contains(*i))
                .map(|(_, (e, _))| Arc::clone(e))
                .collect(),
            Self::Dedup { schema, spec, .. } => {
                let keys: Vec<usize> =
                    if spec.keys.is_empty() { (0..schema.fields().len()).collect() } else { spec.keys.clone() };
                keys.iter()
                    .map(|i| Arc::new(Column::new(schema.field(*i).name(), *i)) as Arc<dyn PhysicalExpr>)
                    .collect()
            }
            Self::Limit { .. } => vec![],
            Self::Join(spec) => spec.left.keys.clone(),
            Self::TopN(spec) => spec.partition.clone(),
            Self::OverWindow(spec) => spec.partition.clone(),
            Self::GroupsWithState(spec) => spec.keys.clone(),
            Self::Changelog(spec) => spec
                .keys
                .iter()
                .map(|i| Arc::new(Column::new(spec.schema.field(*i).name(), *i)) as Arc<dyn PhysicalExpr>)
                .collect(),
        }
    }

    /// The state key columns, by name, for `EXPLAIN`.
    pub fn key_names(&self) -> Vec<String> {
        match self {
            Self::Aggregate { parts, .. } => parts.group_by.expr().iter().map(|(_, n)| n.clone()).collect(),
            Self::Session { parts, .. } => parts.group_by.expr().iter().map(|(_, n)| n.clone()).collect(),
            Self::Dedup { schema, spec, .. } if spec.keys.is_empty() => {
                schema.fields().iter().map(|f| f.name().clone()).collect()
            }
            Self::Dedup { schema, spec, .. } => spec.keys.iter().map(|i| schema.field(*i).name().clone()).collect(),
            Self::Limit { .. } => vec![],
            Self::Join(spec) => {
                spec.left.key_names.iter().zip(&spec.right.key_names).map(|(l, r)| format!("{l} = {r}")).collect()
            }
            Self::TopN(spec) => spec.partition_names.clone(),
            Self::OverWindow(spec) => spec.partition_names.clone(),
            Self::Changelog(spec) => spec.keys.iter().map(|i| spec.schema.field(*i).name().clone()).collect(),
            Self::GroupsWithState(spec) => spec.key_names.clone(),
        }
    }

    /// The rule by which the watermark evicts state and emits rows, for
    /// `EXPLAIN`.
    pub fn watermark_rule(&self) -> String {
        let time = |parts: &AggregateParts, et: &EventTimeKey| {
            let (expr, name) = &parts.group_by.expr()[et.index];
            let is_struct = expr.data_type(&parts.input_schema).is_ok_and(|t| matches!(t, DataType::Struct(_)));
            if is_struct {
                format!("{name}.end")
            } else {
                name.clone()
            }
        };
        match self {
            Self::Aggregate { event_time: None, .. } | Self::Session { event_time: None, .. } => {
                "none (state is kept for every key)".into()
            }
            Self::Aggregate { mode: OutputMode::Complete, .. } | Self::Session { mode: OutputMode::Complete, .. } => {
                "none in complete mode (every group is kept)".into()
            }
            Self::Aggregate { parts, event_time: Some(et), mode, .. } => {
                let t = time(parts, et);
                match mode {
                    OutputMode::Append => format!("emit and evict a group when {t} <= watermark; drop late rows"),
                    _ => format!("evict a group when {t} <= watermark; drop late rows"),
                }
            }
            Self::Session { .. } => "emit and evict a session when its end <= watermark; drop late rows".into(),
            Self::Dedup { event_time: None, .. } => "none (every key is kept)".into(),
            Self::Dedup { schema, spec, event_time: Some(et), .. } => {
                let name = schema.field(et.index).name();
                match spec.within_watermark_us {
                    Some(d) => format!("forget a key when its first {name} + {} ms <= watermark", d / 1000),
                    None => format!("forget a key when {name} <= watermark; drop late rows"),
                }
            }
            Self::Limit { .. } => "none".into(),
            Self::Join(spec) => spec.watermark_rule(),
            Self::TopN(spec) => match (&spec.event_time, spec.mode) {
                (None, _) => "none (every partition's top rows are kept)".into(),
                (Some(_), OutputMode::Append) => {
                    "emit a window's ranking and evict it when its end <= watermark; drop late rows".into()
                }
                (Some(_), _) => "evict a window's ranking when its end <= watermark; drop late rows".into(),
            },
            Self::Changelog(_) => "none (the last row of every key is kept)".into(),
            Self::OverWindow(_) => "none (every row of every partition is kept)".into(),
            Self::GroupsWithState(spec) => match spec.timeout {
                crate::arbitrary::GroupStateTimeout::NoTimeout => "none (the function removes its state)".into(),
                crate::arbitrary::GroupStateTimeout::ProcessingTime => {
                    "call a group's timeout once the batch time passes it".into()
                }
                crate::arbitrary::GroupStateTimeout::EventTime => {
                    "call a group's timeout once the watermark passes it; drop late rows".into()
                }
            },
        }
    }
}
