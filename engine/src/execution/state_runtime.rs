//! [`StateRuntime`]: the operators' state of one running query, owned by
//! its executor apart from the (immutable) plan.
//!
//! For each [`StatefulExec`] of the plan the runtime holds one operator
//! instance per state partition. It restores them from the checkpoint
//! (after checking the recorded layout), hands them to each batch through a
//! [`BatchState`], commits their changes, and keeps the rows the first
//! operator drops as late. [`StateRuntime::operator_dir`] is the one place
//! the checkpoint's `state/` directory is laid out.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::MemoryPool;

use crate::checkpoint::CheckpointDir;
use crate::error::{Result, ResultExt, SluiceError};
use crate::physical::{BatchState, LateCollector, LateCollectors, OperatorCell, OperatorInstances};
use crate::plan::IncrementalPlan;
use crate::progress::StateOperatorProgress;
use crate::state::StateStore;
use crate::stateful::{inspect, BatchContext, OperatorSpec, StateLayout};

/// One stateful operator of the plan.
#[derive(Debug)]
struct Operator {
    id: usize,
    state_dir: String,
    spec: Arc<OperatorSpec>,
}

/// The state of every stateful operator of a running query.
#[derive(Debug)]
pub struct StateRuntime {
    operators: Vec<Operator>,
    instances: OperatorInstances,
    late: LateCollectors,
    pool: Arc<dyn MemoryPool>,
}

impl StateRuntime {
    /// Instances (without state yet) for every stateful node of `plan`;
    /// with `collect_late`, the first operator keeps the rows it drops as
    /// late.
    pub fn new(plan: &IncrementalPlan, collect_late: bool) -> Result<Self> {
        let mut operators = vec![];
        let mut instances = vec![];
        for (k, node) in plan.stateful_nodes().into_iter().enumerate() {
            if node.id() != k {
                return Err(SluiceError::internal(format!(
                    "stateful operators numbered {} at position {k}",
                    node.id()
                )));
            }
            let mut cells: Vec<OperatorCell> = vec![];
            for _ in 0..node.state_partitions() {
                let mut op = node.spec().create()?;
                if k == 0 && collect_late {
                    op.collect_late_rows(true);
                }
                cells.push(Arc::new(tokio::sync::Mutex::new(op)));
            }
            instances.push(cells);
            operators.push(Operator {
                id: node.id(),
                state_dir: node.state_dir().to_string(),
                spec: Arc::clone(node.spec()),
            });
        }
        let late: Vec<Arc<LateCollector>> = operators.iter().map(|_| Arc::new(LateCollector::default())).collect();
        if let (Some(first), true) = (late.first(), collect_late) {
            first.keep_rows(true);
        }
        Ok(Self { operators, instances: Arc::new(instances), late: Arc::new(late), pool: plan.memory_pool() })
    }

    /// Where the state of operator `state_dir` lives in the checkpoint at
    /// `root`: `state/<state_dir>` (`state/0`, `state/1`, ..., `state/limit`).
    pub fn operator_dir(root: &CheckpointDir, state_dir: &str) -> CheckpointDir {
        Self::state_root(root).child(state_dir)
    }

    /// The checkpoint's `state/` directory, holding one directory per
    /// operator.
    fn state_root(root: &CheckpointDir) -> CheckpointDir {
        root.child("state")
    }

    /// The number of state partitions recorded in the checkpoint at `root`
    /// (the most any of its operators has: an operator without keys keeps
    /// one), if it holds state.
    pub async fn stored_partitions(root: &CheckpointDir) -> Result<Option<usize>> {
        let state_root = Self::state_root(root);
        let mut most = None;
        for k in state_root.list_numbered_dirs().await? {
            if let Some(n) = StateStore::stored_partitions(&state_root.child(&k.to_string())).await? {
                most = Some(most.map_or(n, |m: usize| m.max(n)));
            }
        }
        Ok(most)
    }

    /// The handle a batch's stateful nodes reach their state through.
    pub fn batch_state(&self, batch: BatchContext) -> BatchState {
        BatchState::new(batch, Arc::clone(&self.instances), Arc::clone(&self.late))
    }

    /// Load every operator's state as of `version` (the last committed
    /// batch) from the checkpoint at `root`, after checking that it has
    /// this query's layout. With `reset_changed`, an operator whose layout
    /// changed starts with empty state (and a warning) instead of failing;
    /// the others keep theirs.
    pub async fn restore(&self, root: &CheckpointDir, version: Option<u64>, reset_changed: bool) -> Result<()> {
        let state_root = Self::state_root(root);
        let numbered = self.operators.iter().filter(|o| o.state_dir.parse::<u64>().is_ok()).count();
        let stored: Vec<u64> = state_root.list_numbered_dirs().await?;
        if let Some(extra) = stored.iter().find(|k| **k as usize >= numbered).filter(|_| !reset_changed) {
            return Err(SluiceError::Checkpoint {
                path: format!("{}/{extra}", state_root.location()),
                reason: format!(
                    "the checkpoint holds state of {} stateful operator(s) but the query now has {numbered}: the \
                     query changed in a way that cannot reuse this state; restore the original query or use a new \
                     checkpoint location",
                    stored.len(),
                ),
            });
        }
        for (op, cells) in self.operators.iter().zip(self.instances.iter()) {
            let dir = Self::operator_dir(root, &op.state_dir);
            let what = match op.spec.as_ref() {
                OperatorSpec::Limit { .. } => "the LIMIT operator".to_string(),
                _ => format!("stateful operator {}", op.id),
            };
            let mut layout = match cells.first() {
                Some(cell) => cell.lock().await.state_layout(),
                None => continue,
            };
            // State an earlier Sluice kept in the row store stays there: the
            // aggregation or join runs as it did when the checkpoint was written (as
            // Spark keeps a checkpoint's state format version).
            if let Some(row_store) = op.spec.row_store_operator() {
                let stored = dir.read_json::<StateLayout>("_layout").await?;
                if stored.is_some_and(|s| row_store.wrote(&s.operator) && s.operator != layout.operator) {
                    for cell in cells.iter() {
                        *cell.lock().await = row_store.create()?;
                    }
                    if let Some(cell) = cells.first() {
                        layout = cell.lock().await.state_layout();
                    }
                }
            }
            let changed = check_layout(&dir, &what, &layout, reset_changed).await?;
            if changed {
                StateStore::clear(&dir).await?;
            } else if let Some(n) = StateStore::stored_partitions(&dir).await? {
                if n != cells.len() {
                    return Err(SluiceError::Checkpoint {
                        path: format!("{}/_metadata", dir.location()),
                        reason: format!(
                            "{what} keeps its state in {n} partition(s), but the query was planned with {}; the \
                             checkpoint's operators disagree on their partition count. The checkpoint is damaged: \
                             restore it from a backup, or use a new checkpoint location",
                            cells.len()
                        ),
                    });
                }
            }
            for (p, cell) in cells.iter().enumerate() {
                cell.lock()
                    .await
                    .restore(dir.clone(), version, &self.pool, p, changed)
                    .await
                    .context_with(|| format!("restoring partition {p} of {what}"))?;
            }
            if changed {
                dir.write_json("_layout", &layout).await?;
            }
            // How to decode the state, for `sluice_state` and `sluice state`.
            dir.write_blob(inspect::DESCRIPTOR_FILE, &inspect::describe(&op.spec, &layout)?).await?;
        }
        Ok(())
    }

    /// Whether the query has stateful operators.
    pub fn has_state(&self) -> bool {
        !self.operators.is_empty()
    }

    /// The first operator (its kind) whose state cannot be rebuilt by
    /// replaying batches from the sources (see
    /// [`crate::stateful::StatefulOperator::rebuilt_by_replay`]), if any.
    pub async fn not_rebuilt_by_replay(&self) -> Option<String> {
        for cells in self.instances.iter() {
            if let Some(cell) = cells.first() {
                let op = cell.lock().await;
                if !op.rebuilt_by_replay() {
                    return Some(op.state_layout().operator);
                }
            }
        }
        None
    }

    /// End batch `version`: with `checkpoint`, make the operators' state
    /// changes (since their last checkpoint) durable as `version`; without,
    /// keep them in memory for a later checkpoint (the operators are
    /// rebuilt by replay). One progress entry per operator (its partitions
    /// summed).
    pub async fn commit(&self, version: u64, checkpoint: bool) -> Result<Vec<StateOperatorProgress>> {
        let mut out = vec![];
        for (cells, late) in self.instances.iter().zip(self.late.iter()) {
            // One task per partition: a commit encodes the partition's new
            // state chunks, and partitions encode on every core at once.
            let tasks = cells.iter().map(|c| {
                let cell = Arc::clone(c);
                tokio::spawn(async move {
                    let mut op = cell.lock().await;
                    match checkpoint {
                        true => op.commit(version).await,
                        false => op.end_uncommitted().await,
                    }
                })
            });
            let parts = futures::future::try_join_all(tasks)
                .await
                .map_err(|e| SluiceError::internal(format!("a state partition's commit stopped: {e}")))?
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            let mut total: Option<StateOperatorProgress> = None;
            for p in parts {
                total = Some(match total {
                    None => p,
                    Some(mut t) => {
                        t.num_rows_total += p.num_rows_total;
                        t.num_rows_updated += p.num_rows_updated;
                        t.num_rows_removed += p.num_rows_removed;
                        t.num_rows_dropped_by_watermark += p.num_rows_dropped_by_watermark;
                        t.memory_used_bytes += p.memory_used_bytes;
                        t.commit_time_ms = t.commit_time_ms.max(p.commit_time_ms);
                        t.all_updates_time_ms = t.all_updates_time_ms.max(p.all_updates_time_ms);
                        t.all_removals_time_ms = t.all_removals_time_ms.max(p.all_removals_time_ms);
                        t.num_partitions += p.num_partitions;
                        for (k, v) in p.custom_metrics {
                            *t.custom_metrics.entry(k).or_default() += v;
                        }
                        t
                    }
                });
            }
            if let Some(t) = total.as_mut() {
                // Rows the operator's watermark filter dropped before it.
                t.num_rows_dropped_by_watermark += late.take().0;
            }
            out.extend(total);
        }
        Ok(out)
    }

    /// The earliest processing time (ms) at which an operator's timer fires
    /// (a processing-time timeout), over every operator and partition.
    pub async fn next_timer_ms(&self) -> Option<i64> {
        let mut next: Option<i64> = None;
        for cells in self.instances.iter() {
            for c in cells {
                if let Some(t) = c.lock().await.next_timer_ms() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        next
    }

    /// The rows the first operator dropped as late in the last batch.
    pub async fn take_late_rows(&self) -> Vec<RecordBatch> {
        let mut out = vec![];
        if let Some(cells) = self.instances.first() {
            for c in cells {
                out.extend(c.lock().await.take_late_rows());
            }
        }
        if let Some(late) = self.late.first() {
            // Only the rows: their count goes to the progress at commit.
            out.extend(late.take_rows());
        }
        out
    }
}
/// Check the layout recorded in `op_dir` against `layout` before the state
/// there is restored: `Ok(true)` when the state must start afresh (layout
/// changed or unknown, with `reset_changed`), `Ok(false)` to reuse it (the
/// layout of a fresh directory is recorded now). `what` names the operator
/// in errors.
async fn check_layout(op_dir: &CheckpointDir, what: &str, layout: &StateLayout, reset_changed: bool) -> Result<bool> {
    let old = op_dir.read_json::<StateLayout>("_layout").await?;
    // State files without their layout: the query-change check would be
    // skipped and the state reused blindly, so this is damage.
    let unknown = old.is_none() && !op_dir.list_all().await?.is_empty();
    if unknown && !reset_changed {
        return Err(SluiceError::Checkpoint {
            path: format!("{}/_layout", op_dir.location()),
            reason: format!(
                "missing, but {what} has state files: without its layout Sluice cannot check that the state \
                 belongs to this query. The checkpoint is damaged: restore the file from a backup, set \
                 reset_changed_state = 'true' to start this operator's state afresh, or use a new checkpoint location"
            ),
        });
    }
    let changed = unknown || old.as_ref().is_some_and(|old| old != layout);
    if let (Some(old), true, false) = (&old, changed, reset_changed) {
        return Err(SluiceError::Checkpoint {
            path: format!("{}/_layout", op_dir.location()),
            reason: format!(
                "{what} changed: the checkpoint holds state of operator '{}' with keys [{}] and state [{}], the \
                 query now has operator '{}' with keys [{}] and state [{}]. Its state cannot be reused: restore the \
                 original query, use a new checkpoint location, or set reset_changed_state = 'true' to start this \
                 operator's state afresh",
                old.operator,
                old.keys.join(", "),
                old.values.join(", "),
                layout.operator,
                layout.keys.join(", "),
                layout.values.join(", ")
            ),
        });
    }
    if changed {
        tracing::warn!(
            operator = %layout.operator,
            "{what} changed: its state is reset (reset_changed_state); the other operators keep theirs"
        );
    } else if old.is_none() {
        // A fresh operator records its layout before any state file exists.
        op_dir.write_json("_layout", layout).await?;
    }
    Ok(changed)
}
