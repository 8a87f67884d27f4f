//! Reading a stateful operator's committed state as rows, for the
//! `sluice_state` table function and `sluice state`.
//!
//! When an operator's state is restored, the runtime writes next to its
//! `_layout` a `_state_schema` file: an Arrow IPC stream holding only a
//! schema, whose fields are the types needed to decode the stored rows and
//! whose metadata (`sluice.state`) says how (the operator kind, the grouping
//! keys, the aggregate functions by name). A reader rebuilds the decoding
//! from that file alone, so a checkpoint can be read with no query running,
//! and the rows are the same either way:
//!
//! | operator | one row per | columns |
//! |---|---|---|
//! | aggregate | group (and window) | the keys, then each aggregate's current value |
//! | session aggregate | open session | the keys (with the session bounds), then the aggregates |
//! | dedup | key seen | the key columns, then `expires_at` (NULL: kept for ever) |
//! | join | stored input row | `side`, `matched`, `expires_at`, then `left_<column>`s and `right_<column>`s (the other side's NULL); `matched` is NULL on a side that does not track it (an inner join's) |
//! | Top-N | ranked row of a partition | the input columns, then `position` (1 = first) |
//! | limit | the operator | `rows_seen` |

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::AggregateUDF;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateMode, PhysicalGroupBy};
use serde::{Deserialize, Serialize};

use super::aggregate::AggStages;
use super::{AggregateParts, OperatorSpec, StateLayout};
use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::state::StateStore;

/// The file, in an operator's state directory, describing how to decode it.
pub const DESCRIPTOR_FILE: &str = "_state_schema";
const METADATA_KEY: &str = "sluice.state";

/// How an operator's stored rows decode (the schema's metadata).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Descriptor {
    /// `aggregate`, `session_aggregate`, `dedup`, `join` or `limit`.
    operator: String,
    /// Aggregates: the first `num_keys` fields are the grouping keys.
    #[serde(default)]
    num_keys: usize,
    /// Aggregates: the functions, whose arguments follow the keys in order.
    #[serde(default)]
    aggregates: Vec<AggregateDescriptor>,
    /// Dedup: the key columns among the fields.
    #[serde(default)]
    keys: Vec<usize>,
    /// Join: the first `left_columns` fields are the left side's.
    #[serde(default)]
    left_columns: usize,
    /// Join: whether each side (left, right) keeps its rows' matched flag
    /// (an outer or semi join's preserved side); otherwise it is NULL.
    #[serde(default)]
    tracks_matches: [bool; 2],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AggregateDescriptor {
    /// The aggregate function's name in the function registry.
    function: String,
    /// Its output column.
    name: String,
    /// The number of its arguments (their types are fields of the schema).
    args: usize,
    distinct: bool,
    ignore_nulls: bool,
    /// It has an `ORDER BY` (its state cannot be decoded without the ordering).
    ordered: bool,
}

/// The descriptor file's content for `spec`.
pub(crate) fn describe(spec: &OperatorSpec, layout: &super::StateLayout) -> Result<Vec<u8>> {
    let (fields, desc): (Vec<Field>, Descriptor) = match spec {
        OperatorSpec::Aggregate { parts, .. } | OperatorSpec::Session { parts, .. } => {
            let operator = match spec {
                // The kind the state was written as (an aggregation whose
                // checkpoint predates panes and live groups keeps the row store).
                OperatorSpec::Aggregate { .. } => layout.operator.as_str(),
                _ => "session_aggregate",
            };
            let input = &parts.input_schema;
            let mut fields = vec![];
            for (e, name) in parts.group_by.expr() {
                fields.push(Field::new(name, e.data_type(input)?, e.nullable(input)?));
            }
            let mut aggregates = vec![];
            for (i, a) in parts.aggr.iter().enumerate() {
                let args = a.expressions();
                for (j, e) in args.iter().enumerate() {
                    fields.push(Field::new(format!("__arg{i}_{j}"), e.data_type(input)?, true));
                }
                aggregates.push(AggregateDescriptor {
                    function: a.fun().name().to_string(),
                    name: a.name().to_string(),
                    args: args.len(),
                    distinct: a.is_distinct(),
                    ignore_nulls: a.ignore_nulls(),
                    ordered: !a.order_bys().is_empty(),
                });
            }
            let num_keys = parts.group_by.expr().len();
            (
                fields,
                Descriptor {
                    operator: operator.into(),
                    num_keys,
                    aggregates,
                    keys: vec![],
                    left_columns: 0,
                    tracks_matches: [false; 2],
                },
            )
        }
        OperatorSpec::Dedup { schema, spec, .. } => {
            let keys = if spec.keys.is_empty() { (0..schema.fields().len()).collect() } else { spec.keys.clone() };
            let fields = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            (
                fields,
                Descriptor {
                    operator: "dedup".into(),
                    num_keys: 0,
                    aggregates: vec![],
                    keys,
                    left_columns: 0,
                    tracks_matches: [false; 2],
                },
            )
        }
        OperatorSpec::Join(join) => {
            let fields = join.joined_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            let left_columns = join.left.schema.fields().len();
            let tracks_matches = [join.tracks_matches(0), join.tracks_matches(1)];
            (
                fields,
                Descriptor {
                    // The kind the state was written as (in chunks, or rows
                    // in a checkpoint from before chunks).
                    operator: if super::join::is_row_store_layout(&layout.operator) { "join" } else { JOIN_CHUNKS }
                        .into(),
                    num_keys: 0,
                    aggregates: vec![],
                    keys: vec![],
                    left_columns,
                    tracks_matches,
                },
            )
        }
        OperatorSpec::TopN(_) | OperatorSpec::Changelog(_) | OperatorSpec::OverWindow(_) => {
            // Lists of rows per key: a Top-N's input rows in rank order, a
            // changelog's last row, an over-window's output rows in order.
            let (operator, schema) = match spec {
                OperatorSpec::TopN(t) => ("topn", &t.schema),
                OperatorSpec::Changelog(c) => ("changelog", &c.schema),
                OperatorSpec::OverWindow(o) => ("over_window", &o.output),
                _ => return Err(SluiceError::internal("a row-list operator of another kind")),
            };
            let fields = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            let desc = Descriptor {
                operator: operator.into(),
                num_keys: 0,
                aggregates: vec![],
                keys: vec![],
                left_columns: 0,
                tracks_matches: [false; 2],
            };
            (fields, desc)
        }
        OperatorSpec::GroupsWithState(g) => {
            let mut fields = vec![];
            for (e, name) in g.keys.iter().zip(&g.key_names) {
                fields.push(Field::new(name, e.data_type(&g.input_schema)?, true));
            }
            let desc = Descriptor {
                operator: "groups_with_state".into(),
                num_keys: fields.len(),
                aggregates: vec![],
                keys: vec![],
                left_columns: 0,
                tracks_matches: [false; 2],
            };
            (fields, desc)
        }
        OperatorSpec::Limit { .. } => (
            vec![],
            Descriptor {
                operator: "limit".into(),
                num_keys: 0,
                aggregates: vec![],
                keys: vec![],
                left_columns: 0,
                tracks_matches: [false; 2],
            },
        ),
    };
    let metadata =
        [(METADATA_KEY.to_string(), serde_json::to_string(&desc).map_err(|e| SluiceError::internal(e.to_string()))?)];
    let schema = Schema::new(fields).with_metadata(metadata.into_iter().collect());
    let mut out = vec![];
    StreamWriter::try_new(&mut out, &schema)?.finish()?;
    Ok(out)
}

fn read_descriptor(bytes: &[u8], path: &str) -> Result<(SchemaRef, Descriptor)> {
    let bad = |reason: String| SluiceError::Checkpoint { path: path.to_string(), reason };
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| bad(format!("unreadable ({e}); the checkpoint is damaged")))?;
    let schema = reader.schema();
    let json = schema.metadata().get(METADATA_KEY).ok_or_else(|| bad(format!("has no '{METADATA_KEY}' entry")))?;
    let desc: Descriptor =
        serde_json::from_str(json).map_err(|e| bad(format!("unreadable '{METADATA_KEY}' entry: {e}")))?;
    // The positions it names must be fields of its schema.
    let n = schema.fields().len();
    let args: usize = desc.aggregates.iter().map(|a| a.args).sum();
    if desc.num_keys + args > n || desc.left_columns > n || desc.keys.iter().any(|k| *k >= n) {
        return Err(bad(format!(
            "names more columns than its schema has ({n}); the checkpoint is damaged: restore it from a backup"
        )));
    }
    Ok((schema, desc))
}

/// One stateful operator of a checkpoint, as `sluice state` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorStateInfo {
    /// Its directory under `state/` (`0`, `1`, ..., or `limit`): the name
    /// `sluice_state` and `sluice state --operator` take.
    pub name: String,
    /// Its kind: `aggregate`, `session_aggregate`, `dedup`, `join`, `limit`
    /// (`unknown` for state written before Sluice recorded it).
    pub kind: String,
    /// What it keeps (from its recorded layout).
    pub layout: Option<StateLayout>,
    /// Oldest and newest version its files can restore.
    pub versions: Option<(u64, u64)>,
    /// Bytes of its files.
    pub bytes: u64,
    /// Its state partitions.
    pub partitions: usize,
}

/// The committed state of one operator, decoded.
#[derive(Debug, Clone)]
pub struct OperatorStateRows {
    /// The operator (its directory name) and kind.
    pub operator: String,
    /// The version (batch id) read.
    pub version: u64,
    /// Schema of the rows.
    pub schema: SchemaRef,
    /// One row per key (see the module documentation).
    pub batches: Vec<RecordBatch>,
}

/// The stateful operators of the checkpoint at `root`, in order.
pub async fn list_operators(root: &CheckpointDir) -> Result<Vec<OperatorStateInfo>> {
    let state = root.child("state");
    let mut names: Vec<String> = state.list_numbered_dirs().await?.iter().map(u64::to_string).collect();
    if StateStore::stored_partitions(&state.child("limit")).await?.is_some() {
        names.push("limit".into());
    }
    let mut out = vec![];
    for name in names {
        let dir = state.child(&name);
        let (versions, bytes) = StateStore::stored_versions(&dir).await?;
        let path = format!("{}/{DESCRIPTOR_FILE}", dir.location());
        let kind = match dir.read_blob(DESCRIPTOR_FILE).await? {
            Some(bytes) => read_descriptor(&bytes, &path)?.1.operator,
            None => "unknown".into(),
        };
        out.push(OperatorStateInfo {
            kind,
            layout: dir.read_json::<StateLayout>("_layout").await?,
            partitions: StateStore::stored_partitions(&dir).await?.unwrap_or(0),
            versions,
            bytes,
            name,
        });
    }
    Ok(out)
}

/// Read operator `operator` (its number, `limit`, or its kind when only one
/// operator has it) of the checkpoint at `root` as of `version` (`None`: the
/// last committed batch). `aggregate` finds aggregate functions by name;
/// `task` runs their evaluation.
pub async fn read_operator(
    root: &CheckpointDir,
    operator: &str,
    version: Option<u64>,
    aggregate: &dyn Fn(&str) -> Option<Arc<AggregateUDF>>,
    task: Arc<TaskContext>,
) -> Result<OperatorStateRows> {
    let operators = list_operators(root).await?;
    let listing = || {
        let all: Vec<String> = operators.iter().map(|o| format!("'{}' ({})", o.name, reader_kind(&o.kind))).collect();
        if all.is_empty() {
            "it has no stateful operator with committed state".to_string()
        } else {
            format!("its operators are {}", all.join(", "))
        }
    };
    // A windowed aggregation kept as panes is an `aggregate` to the reader.
    let by_kind: Vec<&OperatorStateInfo> = operators.iter().filter(|o| reader_kind(&o.kind) == operator).collect();
    let info = match operators.iter().find(|o| o.name == operator) {
        Some(o) => o,
        None if by_kind.len() == 1 => by_kind[0],
        None => {
            let why = if by_kind.len() > 1 { "more than one operator is of that kind" } else { "there is none" };
            return Err(SluiceError::plan(format!(
                "unknown state operator '{operator}' in the checkpoint at {} ({why}): {}",
                root.location(),
                listing()
            )));
        }
    };
    let committed = crate::checkpoint::QueryCheckpoint::open_dir(root.clone()).latest_commit().await?;
    let committed = committed.ok_or_else(|| {
        SluiceError::plan(format!("the checkpoint at {} has no committed batch yet: no state to read", root.location()))
    })?;
    // Under state_checkpoint_interval the newest state checkpointed may be
    // older than the last committed batch.
    let checkpointed = committed.state_version();
    let committed = committed.batch_id;
    let version = version.or(checkpointed).ok_or_else(|| {
        SluiceError::plan(format!(
            "the checkpoint at {} has no state checkpointed yet (state_checkpoint_interval): no state to read",
            root.location()
        ))
    })?;
    let retained = info.versions.map(|(o, n)| (o, n.min(committed)));
    if !retained.is_some_and(|(oldest, newest)| (oldest..=newest).contains(&version)) {
        return Err(SluiceError::plan(format!(
            "state operator '{}' of the checkpoint at {} has no committed version {version}: it retains {}",
            info.name,
            root.location(),
            match retained {
                Some((o, n)) => format!("batches {o} to {n}"),
                None => "no version".into(),
            }
        )));
    }
    let dir = root.child("state").child(&info.name);
    let path = format!("{}/{DESCRIPTOR_FILE}", dir.location());
    let bytes = dir.read_blob(DESCRIPTOR_FILE).await?.ok_or_else(|| SluiceError::Checkpoint {
        path: path.clone(),
        reason: "missing: the state was written by an earlier version of Sluice, which did not record how to decode \
                 it; run the query once with this version (it records the file at start) and read it again"
            .into(),
    })?;
    let (schema, desc) = read_descriptor(&bytes, &path)?;
    // Partition by partition: an operator instance's keys (its chunk ids)
    // are unique only within its own partition.
    let stores = StateStore::open_read_only_partitions(dir, version).await?;
    let (mut out_schema, mut batches) = (None, vec![]);
    for store in &stores {
        let (s, b) = decode(store, &schema, &desc, aggregate, Arc::clone(&task)).await?;
        out_schema = Some(s);
        batches.extend(b);
    }
    let schema = out_schema.ok_or_else(|| SluiceError::internal("a state store of no partitions"))?;
    Ok(OperatorStateRows { operator: info.name.clone(), version, schema, batches })
}

async fn decode(
    store: &StateStore,
    schema: &SchemaRef,
    desc: &Descriptor,
    aggregate: &dyn Fn(&str) -> Option<Arc<AggregateUDF>>,
    task: Arc<TaskContext>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    match desc.operator.as_str() {
        "aggregate" | "session_aggregate" => {
            let stages = AggStages::try_new(aggregate_parts(schema, desc, aggregate)?)?;
            let partial = Arc::clone(&stages.partial_schema);
            let conv =
                RowConverter::new(partial.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
            let mut rows: Vec<&[u8]> = vec![];
            for (_, v) in store.iter() {
                if desc.operator == "aggregate" {
                    rows.push(v.get(8..).ok_or_else(damaged)?);
                } else {
                    rows.extend(super::session::decode_list(v)?);
                }
            }
            let parser = conv.parser();
            let states =
                RecordBatch::try_new(Arc::clone(&partial), conv.convert_rows(rows.iter().map(|r| parser.parse(r)))?)?;
            let out = stages.run(AggregateMode::Final, vec![states], &task).await?;
            let out_schema = out.first().map(|b| b.schema()).unwrap_or(final_schema(&stages)?);
            Ok((out_schema, out))
        }
        super::PANE_AGGREGATE => {
            // Each stored pane is its groups' partial states as Arrow IPC.
            let stages = AggStages::try_new(aggregate_parts(schema, desc, aggregate)?)?;
            let mut states = vec![];
            for (_, v) in store.iter() {
                states.extend(super::pane_aggregate::decode_pane(v, &stages.partial_schema)?);
            }
            let out = stages.run(AggregateMode::Final, states, &task).await?;
            let out_schema = out.first().map(|b| b.schema()).unwrap_or(final_schema(&stages)?);
            Ok((out_schema, out))
        }
        super::LIVE_AGGREGATE => {
            // Chunks of each group's current state (its twin aggregates').
            let parts = super::live_aggregate::merged_parts(&aggregate_parts(schema, desc, aggregate)?)?;
            let stages = AggStages::try_new(parts)?;
            let states = super::live_aggregate::stored_states(store, &stages.partial_schema, desc.num_keys).await?;
            let out = stages.run(AggregateMode::Final, states, &task).await?;
            let out_schema = out.first().map(|b| b.schema()).unwrap_or(final_schema(&stages)?);
            Ok((out_schema, out))
        }
        "dedup" => {
            let fields: Vec<Field> = desc.keys.iter().map(|i| schema.field(*i).clone()).collect();
            let conv = RowConverter::new(fields.iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
            let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = store.iter().unzip();
            let parser = conv.parser();
            let mut columns = conv.convert_rows(keys.iter().map(|k| parser.parse(k)))?;
            columns.push(Arc::new(expiry(values.iter().map(|v| time_of(v)))));
            let mut out_fields = fields;
            out_fields.push(expires_field());
            let out = Arc::new(Schema::new(out_fields));
            Ok((Arc::clone(&out), vec![RecordBatch::try_new(out, columns)?]))
        }
        "join" => decode_join(store, schema, desc.left_columns, desc.tracks_matches),
        JOIN_CHUNKS => decode_join_chunks(store, schema, desc.left_columns, desc.tracks_matches).await,
        "topn" | "changelog" | "over_window" => {
            // Each key's rows in order (a Top-N's in rank order), numbered
            // from 1.
            let conv =
                RowConverter::new(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
            let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new("position", DataType::UInt64, false));
            let out = Arc::new(Schema::new(fields));
            let mut batches = vec![];
            for (_, v) in store.iter() {
                let rows = super::session::decode_list(v)?;
                let parser = conv.parser();
                let mut columns = conv.convert_rows(rows.iter().map(|r| parser.parse(r)))?;
                columns.push(Arc::new(UInt64Array::from_iter_values(1..=rows.len() as u64)));
                batches.push(RecordBatch::try_new(Arc::clone(&out), columns)?);
            }
            Ok((out, batches))
        }
        "groups_with_state" => {
            // Each group's key, its value as JSON with its type, and its
            // pending timeout.
            let conv =
                RowConverter::new(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
            let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = store.iter().unzip();
            let parser = conv.parser();
            let mut columns = conv.convert_rows(keys.iter().map(|k| parser.parse(k)))?;
            let groups = values
                .iter()
                .map(|v| {
                    crate::arbitrary::StoredGroup::decode(v)
                        .map_err(|e| SluiceError::plan(format!("{e}; the state is damaged")))
                })
                .collect::<Result<Vec<_>>>()?;
            let text = |f: &dyn Fn(&(String, Vec<u8>)) -> String| -> StringArray {
                groups.iter().map(|g| g.value.as_ref().map(f)).collect()
            };
            columns.push(Arc::new(text(&|(_, j)| String::from_utf8_lossy(j).into_owned())));
            columns.push(Arc::new(text(&|(t, _)| t.clone())));
            columns.push(Arc::new(Int64Array::from_iter(groups.iter().map(|g| g.timeout_ms))));
            let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new("state", DataType::Utf8, true));
            fields.push(Field::new("state_type", DataType::Utf8, true));
            fields.push(Field::new("timeout_ms", DataType::Int64, true));
            let out = Arc::new(Schema::new(fields));
            Ok((Arc::clone(&out), vec![RecordBatch::try_new(out, columns)?]))
        }
        "limit" => {
            let seen = store.iter().next().map(|(_, v)| time_of(v) as u64).unwrap_or(0);
            let out = Arc::new(Schema::new(vec![Field::new("rows_seen", DataType::UInt64, false)]));
            Ok((Arc::clone(&out), vec![RecordBatch::try_new(out, vec![Arc::new(UInt64Array::from(vec![seen]))])?]))
        }
        other => Err(SluiceError::plan(format!("state of an operator of unknown kind '{other}' cannot be decoded"))),
    }
}

fn damaged() -> SluiceError {
    SluiceError::plan("a stored state entry is too short: the state is damaged; restore the checkpoint from a backup")
}

/// An 8-byte little-endian prefix (`i64::MAX` when absent).
fn time_of(v: &[u8]) -> i64 {
    v.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes).unwrap_or(i64::MAX)
}

fn expires_field() -> Field {
    Field::new("expires_at", DataType::Timestamp(TimeUnit::Microsecond, None), true)
}

/// Expiry times in µs; `i64::MAX` (never) as NULL.
fn expiry(times: impl Iterator<Item = i64>) -> TimestampMicrosecondArray {
    times.map(|t| (t != i64::MAX).then_some(t)).collect()
}

/// The aggregation rebuilt over a schema of its keys and its arguments.
/// The kind of operator a reader names: an aggregation kept as window panes
/// or live groups is an `aggregate`.
fn reader_kind(kind: &str) -> &str {
    match kind {
        super::PANE_AGGREGATE | super::LIVE_AGGREGATE => "aggregate",
        JOIN_CHUNKS => "join",
        k => k,
    }
}

fn aggregate_parts(
    schema: &SchemaRef,
    desc: &Descriptor,
    aggregate: &dyn Fn(&str) -> Option<Arc<AggregateUDF>>,
) -> Result<AggregateParts> {
    let input = Arc::new(Schema::new(schema.fields().clone()));
    let column = |i: usize| Arc::new(Column::new(input.field(i).name(), i)) as Arc<dyn PhysicalExpr>;
    let group: Vec<(Arc<dyn PhysicalExpr>, String)> =
        (0..desc.num_keys).map(|i| (column(i), input.field(i).name().clone())).collect();
    let mut next = desc.num_keys;
    let mut aggr = vec![];
    for a in &desc.aggregates {
        if a.ordered {
            return Err(SluiceError::unsupported(format!(
                "the state of '{}' (an aggregate with ORDER BY) cannot be decoded by sluice_state yet",
                a.name
            )));
        }
        let fun = aggregate(&a.function).ok_or_else(|| {
            SluiceError::plan(format!(
                "the state holds aggregate function '{}', which this session does not know; register it (a UDAF) \
                 before reading the state",
                a.function
            ))
        })?;
        let args = (next..next + a.args).map(column).collect();
        next += a.args;
        let built = AggregateExprBuilder::new(fun, args)
            .schema(Arc::clone(&input))
            .alias(&a.name)
            .with_distinct(a.distinct)
            .with_ignore_nulls(a.ignore_nulls)
            .build()?;
        aggr.push(Arc::new(built));
    }
    Ok(AggregateParts {
        group_by: PhysicalGroupBy::new_single(group),
        filters: vec![None; aggr.len()],
        aggr,
        input_schema: input,
    })
}

/// The schema of the `Final` stage's output (for a state with no group).
fn final_schema(stages: &AggStages) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = stages
        .parts
        .group_by
        .expr()
        .iter()
        .map(|(_, n)| stages.partial_schema.field_with_name(n).cloned())
        .collect::<std::result::Result<_, _>>()?;
    for a in &stages.parts.aggr {
        fields.push(a.field().as_ref().clone());
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The descriptor kind of a join whose state is in chunks.
const JOIN_CHUNKS: &str = "join_chunks";

/// The output schema of a join's state: `side`, `matched`, `expires_at`,
/// then `left_<column>`s and `right_<column>`s.
fn join_state_schema(sides: [&[datafusion::arrow::datatypes::FieldRef]; 2]) -> SchemaRef {
    let mut out_fields = vec![
        Field::new("side", DataType::Utf8, false),
        Field::new("matched", DataType::Boolean, true),
        expires_field(),
    ];
    // Both sides may have a column of one name: `left_<name>`, `right_<name>`.
    for (s, fields) in sides.iter().enumerate() {
        let side = if s == 0 { "left" } else { "right" };
        out_fields.extend(
            fields.iter().map(|f| f.as_ref().clone().with_name(format!("{side}_{}", f.name())).with_nullable(true)),
        );
    }
    Arc::new(Schema::new(out_fields))
}

/// One side's stored rows in the layout of [`join_state_schema`].
fn join_state_batch(
    out_schema: &SchemaRef,
    sides: [&[datafusion::arrow::datatypes::FieldRef]; 2],
    s: usize,
    decoded: Vec<ArrayRef>,
    matched: BooleanArray,
    expires: TimestampMicrosecondArray,
) -> Result<RecordBatch> {
    let n = matched.len();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![if s == 0 { "left" } else { "right" }; n])),
        Arc::new(matched),
        Arc::new(expires),
    ];
    let nulls = |fields: &[datafusion::arrow::datatypes::FieldRef]| -> Vec<ArrayRef> {
        fields.iter().map(|f| new_null_array(f.data_type(), n)).collect()
    };
    if s == 0 {
        columns.extend(decoded);
        columns.extend(nulls(sides[1]));
    } else {
        columns.extend(nulls(sides[0]));
        columns.extend(decoded);
    }
    Ok(RecordBatch::try_new(Arc::clone(out_schema), columns)?)
}

/// A join's state kept in chunks, side by side, each side's rows in
/// eviction-time order within a chunk.
async fn decode_join_chunks(
    store: &StateStore,
    schema: &SchemaRef,
    left_columns: usize,
    tracks_matches: [bool; 2],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let sides = [&schema.fields()[..left_columns], &schema.fields()[left_columns..]];
    let out_schema = join_state_schema(sides);
    let mut batches = vec![];
    for (s, fields) in sides.iter().enumerate() {
        let side_schema = Arc::new(Schema::new(fields.to_vec()));
        for (rows, times, matched) in super::join::stored_rows(store, s as u8, &side_schema).await? {
            if rows.num_rows() == 0 {
                continue;
            }
            let matched: BooleanArray = matched.iter().map(|m| tracks_matches[s].then_some(*m)).collect();
            let expires = expiry(times.into_iter());
            batches.push(join_state_batch(&out_schema, sides, s, rows.columns().to_vec(), matched, expires)?);
        }
    }
    Ok((out_schema, batches))
}

fn decode_join(
    store: &StateStore,
    schema: &SchemaRef,
    left_columns: usize,
    tracks_matches: [bool; 2],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let sides = [&schema.fields()[..left_columns], &schema.fields()[left_columns..]];
    let out_schema = join_state_schema(sides);
    // Rows by side, in key order (the store iterates in no order).
    let mut by_side: [BTreeMap<&[u8], &[u8]>; 2] = [BTreeMap::new(), BTreeMap::new()];
    for (k, v) in store.iter() {
        match k.first() {
            Some(0) => by_side[0].insert(k, v),
            Some(1) => by_side[1].insert(k, v),
            _ => return Err(damaged()),
        };
    }
    let mut batches = vec![];
    for (s, rows) in by_side.iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let conv = RowConverter::new(sides[s].iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        let parser = conv.parser();
        let decoded = conv.convert_rows(rows.values().map(|v| parser.parse(super::join::value_row(v))))?;
        let matched = rows.values().map(|v| tracks_matches[s].then(|| super::join::value_matched(v))).collect();
        let expires = expiry(rows.values().map(|v| super::join::value_time(v)));
        batches.push(join_state_batch(&out_schema, sides, s, decoded, matched, expires)?);
    }
    Ok((out_schema, batches))
}
