//! Producing a batch's records: at least once (idempotent producer, every
//! record acknowledged before the batch counts as written), or exactly once
//! (one Kafka transaction per batch, the batch id committed inside it).
//!
//! Exactly once: the batch id goes into the same transaction as the
//! records, as the committed offset (with metadata) of a consumer group
//! owned by the query, through `send_offsets_to_transaction`. After a
//! restart, `init_transactions` fences the previous producer (same
//! `transactional.id`) and settles its open transaction; the committed
//! offset then tells "batch N committed in Kafka, crash before the commit
//! log" (skip it) from "batch N never committed" (write it again).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::Array;
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_engine::{Result, SluiceError};
use tracing::{debug, info};

use super::records::Records;

/// Counts deliveries and keeps the first delivery error.
#[derive(Default)]
pub struct Deliveries {
    failed: Mutex<Option<String>>,
    acked: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.lock().get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A producer with its delivery counters.
pub type SinkProducer = ThreadedProducer<Deliveries>;

/// Create a producer from `config`.
pub fn create(sink: &str, config: &ClientConfig) -> Result<SinkProducer> {
    config
        .create_with_context(Deliveries::default())
        .map_err(|e| SluiceError::Sink { sink: sink.into(), reason: format!("cannot create a Kafka producer: {e}") })
}

fn sink_error(sink: &str, what: &str, e: KafkaError) -> SluiceError {
    SluiceError::Sink { sink: sink.into(), reason: format!("{what}: {e}") }
}

/// Queue every record of `records` on `producer` (to `topic` unless a row
/// names its own), waiting while the local queue is full.
pub fn send_all(sink: &str, producer: &SinkProducer, topic: Option<&str>, records: &Records) -> Result<u64> {
    let mut sent = 0u64;
    for (i, value) in records.values.iter().enumerate() {
        let row_topic = match (topic, &records.topics) {
            (Some(t), _) => t,
            (None, Some(ts)) if ts.is_valid(i) => ts.value(i),
            _ => {
                return Err(SluiceError::Sink {
                    sink: sink.into(),
                    reason: format!("row {i} of the batch has a NULL topic and no topic option is set"),
                })
            }
        };
        let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(row_topic);
        if let Some(v) = value {
            record = record.payload(v.as_slice());
        }
        if let Some(k) = records.keys.as_ref().filter(|k| k.is_valid(i)) {
            record = record.key(k.value(i));
        }
        if let Some(p) = records.partitions.as_ref().filter(|p| p.is_valid(i)) {
            record = record.partition(p.value(i));
        }
        if let Some(hs) = records.headers.as_ref().map(|h| &h[i]).filter(|h| !h.is_empty()) {
            let mut owned = OwnedHeaders::new_with_capacity(hs.len());
            for (k, v) in hs {
                owned = owned.insert(Header { key: k, value: v.as_deref() });
            }
            record = record.headers(owned);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(sink_error(sink, &format!("cannot produce to topic '{row_topic}'"), e)),
            }
        }
        sent += 1;
    }
    Ok(sent)
}

/// Wait until every queued record is acknowledged; the first failed
/// delivery is the error.
pub fn flush(sink: &str, producer: &SinkProducer, timeout: Duration) -> Result<()> {
    producer
        .flush(timeout)
        .map_err(|e| sink_error(sink, "records were not acknowledged by the brokers in time (is the broker up?)", e))?;
    if let Some(e) = producer.context().failed.lock().take() {
        return Err(SluiceError::Sink { sink: sink.into(), reason: format!("a record was not delivered: {e}") });
    }
    Ok(())
}

/// The exactly-once state of one sink: its transactional producer, the
/// consumer group that records committed batch ids, and the last one.
pub struct Transactional {
    /// The producer, its `transactional.id` derived from the query id.
    pub producer: SinkProducer,
    group: BaseConsumer,
    marker_topic: String,
    query_id: String,
    last_committed: Option<u64>,
}

impl Transactional {
    /// Fence any earlier producer of this query and read the last batch id
    /// committed in Kafka.
    pub fn start(
        sink: &str,
        producer: SinkProducer,
        group: BaseConsumer,
        marker_topic: String,
        query_id: String,
        timeout: Duration,
    ) -> Result<Self> {
        producer.init_transactions(timeout).map_err(|e| {
            sink_error(
                sink,
                "cannot start Kafka transactions (is the broker up? transactions need a broker with a transaction log)",
                e,
            )
        })?;
        let mut this = Self { producer, group, marker_topic, query_id, last_committed: None };
        this.last_committed = this.read_committed(sink, timeout)?;
        info!(sink, last_committed = ?this.last_committed, "Kafka transactional sink ready");
        Ok(this)
    }

    fn marker(&self) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.marker_topic, 0);
        Ok(tpl)
    }

    fn read_committed(&self, sink: &str, timeout: Duration) -> Result<Option<u64>> {
        let committed = self
            .group
            .committed_offsets(self.marker()?, timeout)
            .map_err(|e| sink_error(sink, "cannot read the batch id committed in Kafka", e))?;
        let Some(elem) = committed.find_partition(&self.marker_topic, 0) else { return Ok(None) };
        let Offset::Offset(_) = elem.offset() else { return Ok(None) };
        let meta: serde_json::Value = serde_json::from_str(elem.metadata()).map_err(|_| SluiceError::Sink {
            sink: sink.into(),
            reason: format!(
                "the consumer group of this query's transactions holds metadata '{}' that Sluice did not write; \
                 another client uses the group: give the query a new checkpoint",
                elem.metadata()
            ),
        })?;
        if meta.get("query_id").and_then(|q| q.as_str()) != Some(self.query_id.as_str()) {
            return Ok(None);
        }
        Ok(meta.get("batch_id").and_then(|b| b.as_u64()))
    }

    /// Whether `batch_id` is already committed in Kafka.
    pub fn committed(&self, batch_id: u64) -> bool {
        self.last_committed.is_some_and(|c| c >= batch_id)
    }

    /// Write `records` and the batch id in one transaction.
    pub fn write(
        &mut self,
        sink: &str,
        batch_id: u64,
        topic: Option<&str>,
        records: &[Records],
        timeout: Duration,
    ) -> Result<()> {
        self.producer.begin_transaction().map_err(|e| sink_error(sink, "cannot begin a Kafka transaction", e))?;
        let result = (|| {
            let mut sent = 0;
            for r in records {
                sent += send_all(sink, &self.producer, topic, r)?;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.marker_topic, 0, Offset::Offset(batch_id as i64 + 1))
                .map_err(|e| sink_error(sink, "cannot record the batch id", e))?;
            if let Some(mut e) = tpl.find_partition(&self.marker_topic, 0) {
                e.set_metadata(serde_json::json!({"query_id": self.query_id, "batch_id": batch_id}).to_string());
            }
            let meta = self.group.group_metadata().ok_or_else(|| SluiceError::Sink {
                sink: sink.into(),
                reason: "the transactions' consumer group has no metadata".into(),
            })?;
            self.producer
                .send_offsets_to_transaction(&tpl, &meta, timeout)
                .map_err(|e| sink_error(sink, "cannot commit the batch id in the transaction", e))?;
            debug!(sink, batch_id, sent, "committing Kafka transaction");
            sluice_engine::faults::crash_point("before_kafka_commit");
            self.producer
                .commit_transaction(timeout)
                .map_err(|e| sink_error(sink, "the Kafka transaction did not commit", e))?;
            sluice_engine::faults::crash_point("after_kafka_commit");
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.last_committed = Some(batch_id);
                Ok(())
            }
            Err(e) => {
                let _ = self.producer.abort_transaction(timeout);
                Err(e)
            }
        }
    }
}
