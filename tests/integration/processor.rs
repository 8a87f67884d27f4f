//! `transform_with_state`: value, list and map state per key with TTLs,
//! processing-time and event-time timers, across a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, StringArray, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use sluice::arbitrary::{GroupKey, ListState, MapState, ProcessorState, StatefulProcessor, TimeMode, ValueState};
use sluice::dataframe::with_watermark;
use sluice::stt::render_batches;
use sluice::{
    Environment, ManualClock, OutputMode, SluiceConfig, SluiceSession, StreamingDataFrameExt, StreamingQuery,
};

type Seen = Arc<Mutex<Vec<Vec<String>>>>;

fn out_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("what", DataType::Utf8, false), Field::new("value", DataType::Int64, false)]))
}

fn key_of(key: &GroupKey) -> String {
    key.values()[0].to_string()
}

fn rows(pairs: Vec<(String, i64)>) -> sluice::Result<Vec<RecordBatch>> {
    let (what, value): (Vec<String>, Vec<i64>) = pairs.into_iter().unzip();
    Ok(vec![RecordBatch::try_new(
        out_schema(),
        vec![Arc::new(StringArray::from(what)), Arc::new(Int64Array::from(value))],
    )?])
}

/// Counts clicks per user: a count with a 10 s TTL, the list of actions, a
/// map of counts per action, and a timer 5 s after the first row.
struct Clicks;

impl StatefulProcessor for Clicks {
    fn handle_input_rows(
        &self,
        key: &GroupKey,
        input: &[RecordBatch],
        st: &mut ProcessorState,
    ) -> sluice::Result<Vec<RecordBatch>> {
        let count = ValueState::<i64>::new("count").with_ttl(Duration::from_secs(10));
        let seen = ListState::<String>::new("seen");
        let per = MapState::<String, i64>::new("per_action");
        let mut n = count.get(st)?.unwrap_or(0);
        for b in input {
            let actions = b.column(1).as_any().downcast_ref::<StringArray>().expect("action column");
            for a in actions.iter().flatten() {
                n += 1;
                seen.append(st, a.to_string())?;
                let prev = per.get(st, &a.to_string())?.unwrap_or(0);
                per.update(st, &a.to_string(), prev + 1)?;
            }
        }
        count.update(st, n)?;
        if st.timers().is_empty() {
            st.register_timer(st.current_processing_time_ms() + 5_000)?;
        }
        let k = key_of(key);
        rows(vec![
            (format!("{k}:count"), n),
            (format!("{k}:seen"), seen.get(st)?.len() as i64),
            (format!("{k}:clicks"), per.get(st, &"click".to_string())?.unwrap_or(0)),
        ])
    }

    fn handle_expired_timer(
        &self,
        key: &GroupKey,
        expiry_ms: i64,
        st: &mut ProcessorState,
    ) -> sluice::Result<Vec<RecordBatch>> {
        let count = ValueState::<i64>::new("count");
        let k = key_of(key);
        rows(vec![(format!("{k}:timer"), expiry_ms), (format!("{k}:count_at_timer"), count.get(st)?.unwrap_or(-1))])
    }
}

fn session(env: &Environment, root: &std::path::Path, clock: &Arc<ManualClock>) -> SluiceSession {
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: root.join("default-checkpoints"),
        target_partitions: 2,
        ..Default::default()
    };
    env.session(config, Arc::clone(clock) as sluice::ClockRef)
}

async fn start(df: datafusion::dataframe::DataFrame, ck: &std::path::Path, seen: &Seen) -> StreamingQuery {
    let sink = Arc::clone(seen);
    df.write_stream()
        .query_name("tws")
        .output_mode(OutputMode::Append)
        .option("checkpoint", ck.display().to_string())
        .foreach_batch(move |_, batches| {
            let mut r = render_batches(batches).unwrap_or_default();
            r.sort();
            if !r.is_empty() {
                sink.lock().unwrap().push(r);
            }
            Ok(())
        })
        .start()
        .await
        .unwrap()
}

fn take(seen: &Seen) -> Vec<Vec<String>> {
    std::mem::take(&mut *seen.lock().unwrap())
}

async fn clicks(s: &SluiceSession) -> datafusion::dataframe::DataFrame {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
    ]));
    let df = s.read_stream().format("memory").schema(schema).name("clicks").load().await.unwrap();
    df.group_by_key(&["user"])
        .unwrap()
        .transform_with_state(Clicks, TimeMode::ProcessingTime, OutputMode::Append, out_schema())
        .unwrap()
}

#[tokio::test]
async fn value_list_and_map_state_with_ttl_and_processing_time_timers_across_a_restart() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s1 = session(&env, tmp.path(), &clock);
    let q = start(clicks(&s1).await, &ck, &seen).await;
    let input = env.streams.get("clicks").unwrap();
    clock.set(1_000);
    input.push_rows(&["a,click", "a,view"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec![vec!["a:clicks,1", "a:count,2", "a:seen,2"]]);
    clock.set(5_999);
    assert!(q.process_all_available().await.unwrap().is_empty(), "the timer is at 6 s: not yet");
    clock.set(7_000);
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec![vec!["a:count_at_timer,2", "a:timer,6000"]]);
    s1.stop_all().await.unwrap();

    // After a restart: the count expired at 11 s (its TTL), the list and
    // the map have none and are kept.
    let s2 = session(&env, tmp.path(), &clock);
    let q = start(clicks(&s2).await, &ck, &seen).await;
    clock.set(11_000);
    let p = q.process_all_available().await.unwrap();
    assert_eq!(p.len(), 1, "the key is called back when its count expires");
    assert!(take(&seen).is_empty());
    clock.set(12_000);
    input.push_rows(&["a,click"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec![vec!["a:clicks,2", "a:count,1", "a:seen,3"]]);
    // A timer at exactly the batch time fires.
    clock.set(17_000);
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec![vec!["a:count_at_timer,1", "a:timer,17000"]]);
    let p = q.recent_progress();
    assert_eq!(p.last().unwrap().state_operators[0].num_rows_total, 1);
    s2.stop_all().await.unwrap();
}

/// Per device: the max event time; an event-time timer 5 s after it emits
/// it and clears the key.
struct Idle;

impl StatefulProcessor for Idle {
    fn handle_input_rows(
        &self,
        _key: &GroupKey,
        input: &[RecordBatch],
        st: &mut ProcessorState,
    ) -> sluice::Result<Vec<RecordBatch>> {
        let max = ValueState::<i64>::new("max");
        let mut m = max.get(st)?.unwrap_or(i64::MIN);
        for b in input {
            let ts = b.column(1).as_any().downcast_ref::<TimestampNanosecondArray>().expect("ts");
            m = ts.iter().flatten().map(|t| t / 1_000_000).fold(m, i64::max);
        }
        max.update(st, m)?;
        for t in st.timers() {
            st.delete_timer(t);
        }
        st.register_timer(m + 5_000)?;
        Ok(vec![])
    }

    fn handle_expired_timer(
        &self,
        key: &GroupKey,
        expiry_ms: i64,
        st: &mut ProcessorState,
    ) -> sluice::Result<Vec<RecordBatch>> {
        st.clear_all();
        rows(vec![(format!("{}:idle", key_of(key)), expiry_ms / 1000)])
    }
}

#[tokio::test]
async fn event_time_timers_fire_when_the_watermark_reaches_them_and_clear_all_removes_the_key() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s = session(&env, tmp.path(), &clock);
    let schema = Arc::new(Schema::new(vec![
        Field::new("device", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]));
    let df = s.read_stream().format("memory").schema(schema).name("pings").load().await.unwrap();
    let df = with_watermark(df, "ts", "2 seconds").unwrap();
    let df = df
        .group_by_key(&["device"])
        .unwrap()
        .transform_with_state(Idle, TimeMode::EventTime, OutputMode::Append, out_schema())
        .unwrap();
    let q = start(df, &tmp.path().join("ck"), &seen).await;
    let pings = env.streams.get("pings").unwrap();
    pings.push_rows(&["d1,1970-01-01 00:00:10", "d2,1970-01-01 00:00:12"]).unwrap();
    q.process_all_available().await.unwrap();
    // Watermark 10 s; d1's timer 15 s, d2's 17 s.
    pings.push_rows(&["d2,1970-01-01 00:00:17"]).unwrap();
    q.process_all_available().await.unwrap();
    // Watermark 15 s: d1 fires (at exactly its timer); d2's moved to 22 s.
    assert_eq!(take(&seen), vec![vec!["d1:idle,15"]]);
    pings.push_rows(&["d3,1970-01-01 00:00:30"]).unwrap();
    let p = q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec![vec!["d2:idle,22"]]);
    assert_eq!(p.last().unwrap().state_operators[0].num_rows_total, 1, "only d3 keeps state");
    s.stop_all().await.unwrap();
}

#[tokio::test]
async fn timers_need_a_time_mode() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s = session(&env, tmp.path(), &clock);
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
    ]));
    let df = s.read_stream().format("memory").schema(schema).name("clicks").load().await.unwrap();
    let df = df
        .group_by_key(&["user"])
        .unwrap()
        .transform_with_state(Clicks, TimeMode::None, OutputMode::Append, out_schema())
        .unwrap();
    let q = start(df, &tmp.path().join("ck"), &seen).await;
    env.streams.get("clicks").unwrap().push_rows(&["u,click"]).unwrap();
    let err = q.process_all_available().await.unwrap_err().to_string();
    assert!(err.contains("register_timer needs TimeMode::ProcessingTime or TimeMode::EventTime"), "{err}");
    assert!(err.contains("transform_with_state failed for key [user=u]"), "{err}");
    s.stop_all().await.ok();
}
