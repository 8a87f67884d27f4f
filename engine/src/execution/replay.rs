//! State checkpoints every few batches (`state_checkpoint_interval`): the
//! replay that rebuilds the operators' state at a restart, and the check
//! that a query's sources and operators allow it.
//!
//! The offset and commit logs are written every batch either way. A commit
//! log entry whose batch did not checkpoint the state records the first
//! such batch (`replay_from`); at a restart the state is restored as of the
//! batch before it and those batches run again from the offset log (same
//! source ranges, watermarks and batch times), their output dropped: the
//! sink had it when they first ran. Flink recovers the same way, from the
//! sources' offsets in its last checkpoint.

use tracing::info;

use super::MicroBatchExecution;
use crate::error::{Result, SluiceError};
use crate::stateful::{BatchContext, EventTime};

impl MicroBatchExecution {
    /// Rebuild the operators' state from their last checkpoint (restored)
    /// by running batches `from..=through` again, from the offset log:
    /// the same source ranges, watermarks and batch times. Their output
    /// went to the sink when they first ran and is dropped now.
    pub(super) async fn replay(&mut self, from: Option<u64>, through: u64) -> Result<()> {
        let Some(from) = from.filter(|f| *f <= through) else { return Ok(()) };
        info!(query = %self.name, from, through, "replaying the batches since the last state checkpoint");
        let location = self.checkpoint.root().location().to_string();
        let missing = |b: u64| SluiceError::Checkpoint {
            path: format!("{location}/offsets/{b}"),
            reason: format!(
                "missing: the operators' state was last checkpointed before batch {from}, and rebuilding it replays \
                 batches {from} to {through} from the offset log; restore the file, or delete the checkpoint \
                 directory to start the query from scratch"
            ),
        };
        let mut previous = match from.checked_sub(1) {
            Some(b) => Some(self.checkpoint.read_offsets(b).await?.ok_or_else(|| missing(b))?),
            None => None,
        };
        for b in from..=through {
            let entry = self.checkpoint.read_offsets(b).await?.ok_or_else(|| missing(b))?;
            let start = previous.as_ref().map(|p| p.offsets.clone()).unwrap_or_default();
            let (input, ..) = self.read_sources(b, &start, &entry.offsets).await?;
            let ctx = BatchContext {
                batch_id: b,
                watermark: entry.watermark_ms.map(EventTime::from_millis),
                late_watermark: entry.watermark_ms.map(EventTime::from_millis),
                previous_watermark: previous.as_ref().and_then(|p| p.watermark_ms).map(EventTime::from_millis),
                batch_timestamp_ms: entry.batch_timestamp_ms,
            };
            self.plan.execute(input, self.runtime.batch_state(ctx)).await?;
            let _ = self.runtime.take_late_rows().await;
            self.runtime.commit(b, false).await?;
            previous = Some(entry);
        }
        self.replay_from = Some(from);
        Ok(())
    }

    /// Refuse a `state_checkpoint_interval` over 1 where replay cannot
    /// rebuild the state: a source that cannot replay its rows, or an
    /// operator whose state depends on more than its input (user code, the
    /// clock). A query without state checkpoints every batch (it has
    /// nothing to defer).
    pub async fn check_state_checkpoint_interval(&mut self) -> Result<()> {
        let k = self.state_checkpoint_interval;
        if k <= 1 {
            return Ok(());
        }
        if !self.runtime.has_state() {
            self.state_checkpoint_interval = 1;
            return Ok(());
        }
        let refuse = |what: String| {
            Err(SluiceError::InvalidOption {
                option: "state_checkpoint_interval".into(),
                value: k.to_string(),
                reason: format!(
                    "{what}, so its state cannot be rebuilt by replaying the batches since a state checkpoint; \
                     remove the option (the state is then checkpointed every batch)"
                ),
            })
        };
        if let Some(s) = self.sources.iter().find(|s| !s.source.replayable()) {
            return refuse(format!("source '{}' cannot read its rows again", s.name));
        }
        if let Some(op) = self.runtime.not_rebuilt_by_replay().await {
            return refuse(format!(
                "the query's stateful operator '{op}' keeps state that replaying its input does not rebuild (user \
                 code, the clock, or a state format from an earlier Sluice)"
            ));
        }
        Ok(())
    }
}
