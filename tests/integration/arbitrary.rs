//! `flat_map_groups_with_state` / `map_groups_with_state`: the timeout
//! semantics of Spark's `FlatMapGroupsWithStateSuite` on a manual clock, a
//! restart with pending timeouts, state-type checks on restart, and user
//! functions that fail.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, StringArray, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use sluice::arbitrary::{GroupKey, GroupState, GroupStateTimeout};
use sluice::dataframe::with_watermark;
use sluice::stt::render_batches;
use sluice::{
    Environment, ManualClock, OutputMode, SluiceConfig, SluiceSession, StreamingDataFrameExt, StreamingQuery,
};

type Seen = Arc<Mutex<Vec<(u64, Vec<String>)>>>;

fn session(env: &Environment, root: &std::path::Path, clock: &Arc<ManualClock>) -> SluiceSession {
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: root.join("default-checkpoints"),
        target_partitions: 2,
        ..Default::default()
    };
    env.session(config, Arc::clone(clock) as sluice::ClockRef)
}

fn words() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, true)]))
}

fn timed() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]))
}

/// `key VARCHAR, value BIGINT`: what the functions below return.
fn key_value() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Int64, false)]))
}

fn key_text(key: &GroupKey) -> String {
    match key.get("key") {
        Some(ScalarValue::Utf8(Some(s))) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn row(key: &GroupKey, value: i64) -> sluice::Result<Vec<RecordBatch>> {
    Ok(vec![RecordBatch::try_new(
        key_value(),
        vec![Arc::new(StringArray::from(vec![key_text(key)])), Arc::new(Int64Array::from(vec![value]))],
    )?])
}

fn rows_in(rows: &[RecordBatch]) -> i64 {
    rows.iter().map(|b| b.num_rows() as i64).sum()
}

/// Start `df` into a foreach-batch sink that records each batch's rows
/// (sorted), checkpointed at `ck`.
async fn start(
    df: DataFrame,
    name: &str,
    mode: OutputMode,
    ck: &std::path::Path,
    seen: &Seen,
) -> sluice::Result<StreamingQuery> {
    let sink = Arc::clone(seen);
    df.write_stream()
        .query_name(name)
        .output_mode(mode)
        .option("checkpoint", ck.display().to_string())
        .foreach_batch(move |id, batches| {
            let mut rows = render_batches(batches).unwrap_or_default();
            rows.sort();
            if !rows.is_empty() {
                sink.lock().unwrap().push((id, rows));
            }
            Ok(())
        })
        .start()
        .await
}

fn take(seen: &Seen) -> Vec<String> {
    let mut all: Vec<String> = seen.lock().unwrap().drain(..).flat_map(|(_, r)| r).collect();
    all.sort();
    all
}

/// Spark's running count with a 10-second processing-time timeout: `-1`
/// when a key times out (its state is removed).
async fn counting_with_processing_timeout(session: &SluiceSession) -> DataFrame {
    {
        let df = session.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
        df.group_by_key(&["key"])
            .unwrap()
            .flat_map_groups_with_state(
                OutputMode::Update,
                GroupStateTimeout::ProcessingTime,
                key_value(),
                |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<i64>| {
                    assert!(state.current_watermark_ms().is_none());
                    if state.has_timed_out() {
                        assert!(rows.is_empty());
                        state.remove();
                        return row(key, -1);
                    }
                    let count = state.get_option().copied().unwrap_or(0) + rows_in(rows);
                    state.update(count);
                    state.set_timeout_duration("10 seconds")?;
                    row(key, count)
                },
            )
            .unwrap()
    }
}

#[tokio::test]
async fn processing_time_timeout_on_a_manual_clock_survives_a_restart() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s1 = session(&env, tmp.path(), &clock);
    let q = start(counting_with_processing_timeout(&s1).await, "pt", OutputMode::Update, &ck, &seen).await.unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["a"]).unwrap();
    clock.set(1_000);
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["a,1"]);
    ev.push_rows(&["b"]).unwrap();
    clock.set(2_000);
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["b,1"]);
    // a's timeout (1 s + 10 s) has passed at 12 s; b's data resets its own.
    ev.push_rows(&["b"]).unwrap();
    clock.set(12_000);
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["a,-1", "b,2"]);
    s1.stop_all().await.unwrap();

    // A restart keeps b's pending timeout (22 s).
    let s2 = session(&env, tmp.path(), &clock);
    let q = start(counting_with_processing_timeout(&s2).await, "pt", OutputMode::Update, &ck, &seen).await.unwrap();
    ev.push_rows(&["c"]).unwrap();
    clock.set(23_000);
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["b,-1", "c,1"]);
    ev.push_rows(&["c"]).unwrap();
    clock.set(43_000);
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["c,2"], "c's data moved its timeout to 53 s");
    // No data: nothing is due before 53 s, then a batch without data runs
    // for the timeout alone.
    clock.set(53_000);
    assert!(q.process_all_available().await.unwrap().is_empty(), "a timeout fires only once the clock passes it");
    clock.set(53_001);
    let p = q.process_all_available().await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].num_input_rows, 0);
    assert_eq!(take(&seen), vec!["c,-1"]);
    let state = &p[0].state_operators[0];
    assert_eq!(state.num_rows_total, 0, "every key timed out and removed its state");
    s2.stop_all().await.unwrap();
}

/// Spark's event-time timeout: the max event time per key, a timeout 5 s
/// after it, `-1` on timeout; a 10-second watermark.
async fn max_event_time(session: &SluiceSession) -> DataFrame {
    let df = session.read_stream().format("memory").schema(timed()).name("tv").load().await.unwrap();
    let df = with_watermark(df, "ts", "10 seconds").unwrap();
    df.group_by_key(&["key"])
        .unwrap()
        .flat_map_groups_with_state(
            OutputMode::Update,
            GroupStateTimeout::EventTime,
            key_value(),
            |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<i64>| {
                if state.has_timed_out() {
                    state.remove();
                    return row(key, -1);
                }
                let mut max = state.get_option().copied().unwrap_or(0);
                for b in rows {
                    let ts = b.column(1).as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
                    max = ts.iter().flatten().map(|t| t / 1_000_000_000).fold(max, i64::max);
                }
                state.update(max);
                state.set_timeout_timestamp((max + 5) * 1000)?;
                row(key, max)
            },
        )
        .unwrap()
}

fn at(key: &str, secs: i64) -> String {
    format!("{key},1970-01-01 00:00:{secs:02}")
}

#[tokio::test]
async fn event_time_timeout_fires_when_the_watermark_passes_it_also_after_a_restart() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s1 = session(&env, tmp.path(), &clock);
    let q = start(max_event_time(&s1).await, "et", OutputMode::Update, &ck, &seen).await.unwrap();
    let tv = env.streams.get("tv").unwrap();
    tv.push_rows(&[at("a", 11), at("a", 13), at("a", 15)]).unwrap();
    q.process_all_available().await.unwrap();
    // Max 15, timeout 20, watermark 5.
    assert_eq!(take(&seen), vec!["a,15"]);
    tv.push_rows(&[at("a", 4)]).unwrap();
    let p = q.process_all_available().await.unwrap();
    assert!(take(&seen).is_empty(), "a row older than the watermark is dropped");
    assert_eq!(p[0].state_operators[0].num_rows_dropped_by_watermark, 1);
    tv.push_rows(&[at("a", 10)]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["a,15"]);
    s1.stop_all().await.unwrap();

    // After a restart, b at 31 moves the watermark to 21: a (timeout 20)
    // times out in the batch without data that follows.
    let s2 = session(&env, tmp.path(), &clock);
    let q = start(max_event_time(&s2).await, "et", OutputMode::Update, &ck, &seen).await.unwrap();
    tv.push_rows(&[at("b", 31)]).unwrap();
    let p = q.process_all_available().await.unwrap();
    assert_eq!(p.len(), 2, "a data batch, then one for the watermark");
    assert_eq!(
        seen.lock().unwrap().iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        vec![vec!["b,31"], vec!["a,-1"]]
    );
    take(&seen);
    s2.stop_all().await.unwrap();
}

#[tokio::test]
async fn new_data_resets_a_timeout_and_a_removed_state_still_times_out() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s = session(&env, tmp.path(), &clock);
    let df = s.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
    // "once": a timeout set on first sight only, so later data clears it;
    // "again": set on every call; "gone": removed at once with a timeout.
    let df = df
        .group_by_key(&["key"])
        .unwrap()
        .flat_map_groups_with_state(
            OutputMode::Update,
            GroupStateTimeout::ProcessingTime,
            key_value(),
            |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<i64>| {
                let k = key_text(key);
                if state.has_timed_out() {
                    let code = if state.exists() { 100 + state.get().copied()? } else { -2 };
                    state.remove();
                    return row(key, code);
                }
                let seen_before = state.exists();
                let n = state.get_option().copied().unwrap_or(0) + rows_in(rows);
                match k.as_str() {
                    "gone" => {
                        state.remove();
                        state.set_timeout_duration_ms(5_000)?;
                    }
                    "once" => {
                        state.update(n);
                        if !seen_before {
                            state.set_timeout_duration_ms(10_000)?;
                        }
                    }
                    _ => {
                        state.update(n);
                        state.set_timeout_duration_ms(10_000)?;
                    }
                }
                row(key, n)
            },
        )
        .unwrap();
    let q = start(df, "reset", OutputMode::Update, &tmp.path().join("ck"), &seen).await.unwrap();
    let ev = env.streams.get("ev").unwrap();
    clock.set(1_000);
    ev.push_rows(&["once", "again", "gone"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["again,1", "gone,1", "once,1"]);
    clock.set(8_000);
    ev.push_rows(&["once", "again"]).unwrap();
    q.process_all_available().await.unwrap();
    // gone's timeout (6 s) fires with no state.
    assert_eq!(take(&seen), vec!["again,2", "gone,-2", "once,2"]);
    // At 12 s the first timeouts (11 s) would have fired: new data reset them.
    clock.set(12_000);
    assert!(q.process_all_available().await.unwrap().is_empty());
    clock.set(18_001);
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["again,102"], "'once' lost its timeout to new data; 'again' moved it to 18 s");
    clock.set(100_000);
    assert!(q.process_all_available().await.unwrap().is_empty());
    s.stop_all().await.unwrap();
}

#[tokio::test]
async fn map_groups_with_state_keeps_a_running_count_in_update_mode_only() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s = session(&env, tmp.path(), &clock);
    let df = s.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
    let map = |df: DataFrame| {
        df.group_by_key(&["key"]).unwrap().map_groups_with_state(
            GroupStateTimeout::NoTimeout,
            key_value(),
            |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<i64>| {
                let n = state.get_option().copied().unwrap_or(0) + rows_in(rows);
                state.update(n);
                Ok(vec![ScalarValue::Utf8(Some(key_text(key))), ScalarValue::Int64(Some(n))])
            },
        )
    };
    let err = start(map(df.clone()).unwrap(), "m_append", OutputMode::Append, &tmp.path().join("a"), &seen)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("map_groups_with_state is not supported with append output mode"), "{err}");
    assert!(err.contains("output_mode = 'update'"), "{err}");
    let q = start(map(df).unwrap(), "m", OutputMode::Update, &tmp.path().join("ck"), &seen).await.unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["x", "y", "x"]).unwrap();
    q.process_all_available().await.unwrap();
    ev.push_rows(&["x"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(seen.lock().unwrap().clone(), vec![(0, vec!["x,2".to_string(), "y,1".into()]), (1, vec!["x,3".into()])]);
    s.stop_all().await.unwrap();
}

#[tokio::test]
async fn output_modes_and_timeouts_are_checked_as_in_spark() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s = session(&env, tmp.path(), &clock);
    let df = s.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
    let f = |op_mode: OutputMode, timeout: GroupStateTimeout| {
        df.group_by_key(&["key"]).unwrap().flat_map_groups_with_state(
            op_mode,
            timeout,
            key_value(),
            |key: &GroupKey, rows: &[RecordBatch], _state: &mut GroupState<i64>| row(key, rows_in(rows)),
        )
    };
    let cases = [
        (
            OutputMode::Update,
            GroupStateTimeout::NoTimeout,
            OutputMode::Append,
            "declared in update mode is not supported with append output mode",
        ),
        (
            OutputMode::Append,
            GroupStateTimeout::NoTimeout,
            OutputMode::Update,
            "declared in append mode is not supported with update output mode",
        ),
        (
            OutputMode::Append,
            GroupStateTimeout::NoTimeout,
            OutputMode::Complete,
            "not supported with complete output mode",
        ),
        (OutputMode::Append, GroupStateTimeout::EventTime, OutputMode::Append, "needs a watermark"),
    ];
    for (i, (op, timeout, mode, want)) in cases.into_iter().enumerate() {
        let err = start(f(op, timeout).unwrap(), &format!("m{i}"), mode, &tmp.path().join(format!("c{i}")), &seen)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "case {i}: {err}");
    }
    let err = f(OutputMode::Complete, GroupStateTimeout::NoTimeout).unwrap_err().to_string();
    assert!(err.contains("append or update mode"), "{err}");
    let err = df.group_by_key(&["nope"]).unwrap_err().to_string();
    assert!(err.contains("no column 'nope'") && err.contains("key"), "{err}");
    // A timeout of the wrong kind is an error of the function's call.
    let wrong = df
        .group_by_key(&["key"])
        .unwrap()
        .flat_map_groups_with_state(
            OutputMode::Append,
            GroupStateTimeout::NoTimeout,
            key_value(),
            |key: &GroupKey, _rows: &[RecordBatch], state: &mut GroupState<i64>| {
                state.set_timeout_duration("1 minute")?;
                row(key, 0)
            },
        )
        .unwrap();
    let q = start(wrong, "wrong", OutputMode::Append, &tmp.path().join("w"), &seen).await.unwrap();
    env.streams.get("ev").unwrap().push_rows(&["k"]).unwrap();
    let err = q.process_all_available().await.unwrap_err().to_string();
    assert!(err.contains("set_timeout_duration needs GroupStateTimeout::ProcessingTime"), "{err}");
    assert!(err.contains("key=k"), "{err}");
    s.stop_all().await.ok();
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Tally {
    n: i64,
    last: String,
}

#[tokio::test]
async fn a_restart_with_another_state_type_is_refused_unless_migrated() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s1 = session(&env, tmp.path(), &clock);
    let df = s1.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
    let df = df
        .group_by_key(&["key"])
        .unwrap()
        .flat_map_groups_with_state(
            OutputMode::Update,
            GroupStateTimeout::NoTimeout,
            key_value(),
            |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<i64>| {
                let n = state.get_option().copied().unwrap_or(0) + rows_in(rows);
                state.update(n);
                row(key, n)
            },
        )
        .unwrap();
    let q = start(df, "ty", OutputMode::Update, &ck, &seen).await.unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["p", "p"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["p,2"]);
    s1.stop_all().await.unwrap();

    let tally = |migrate: bool, s: SluiceSession| async move {
        let df = s.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
        let mut keyed = df.group_by_key(&["key"]).unwrap();
        if migrate {
            keyed = keyed.with_state_migration(|old: i64| Tally { n: old, last: "migrated".into() });
        }
        let df = keyed
            .flat_map_groups_with_state(
                OutputMode::Update,
                GroupStateTimeout::NoTimeout,
                key_value(),
                |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<Tally>| {
                    let n = state.get_option().map(|t| t.n).unwrap_or(0) + rows_in(rows);
                    let was = state.get_option().map(|t| t.last.clone()).unwrap_or_default();
                    state.update(Tally { n, last: "new".into() });
                    row(key, if was == "migrated" { 1000 + n } else { n })
                },
            )
            .unwrap();
        (s, df)
    };
    let (s2, df) = tally(false, session(&env, tmp.path(), &clock)).await;
    ev.push_rows(&["p"]).unwrap();
    let err = match start(df, "ty", OutputMode::Update, &ck, &seen).await {
        Err(e) => e.to_string(),
        Ok(q) => q.process_all_available().await.unwrap_err().to_string(),
    };
    assert!(err.contains("the checkpoint holds state of type i64"), "{err}");
    assert!(err.contains("Tally") && err.contains("with_state_migration"), "{err}");
    assert!(take(&seen).is_empty(), "nothing ran");
    s2.stop_all().await.ok();

    let (s3, df) = tally(true, session(&env, tmp.path(), &clock)).await;
    let q = start(df, "ty", OutputMode::Update, &ck, &seen).await.unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["p,1003"], "the i64 count 2 migrated into a Tally, then counted on");
    s3.stop_all().await.unwrap();
}

#[tokio::test]
async fn a_panicking_or_misshapen_function_fails_the_query_and_commits_nothing() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let s = session(&env, tmp.path(), &clock);
    let df = s.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
    let df = df
        .group_by_key(&["key"])
        .unwrap()
        .flat_map_groups_with_state(
            OutputMode::Append,
            GroupStateTimeout::NoTimeout,
            key_value(),
            |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<bool>| {
                state.update(true);
                match key_text(key).as_str() {
                    "boom" => panic!("no sessions for boom"),
                    _ => row(key, rows_in(rows)),
                }
            },
        )
        .unwrap();
    let ck = tmp.path().join("ck");
    let q = start(df, "bad", OutputMode::Append, &ck, &seen).await.unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["ok"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(take(&seen), vec!["ok,1"]);
    ev.push_rows(&["ok", "boom"]).unwrap();
    let err = q.process_all_available().await.unwrap_err().to_string();
    assert!(err.contains("flat_map_groups_with_state failed for key [key=boom]"), "{err}");
    assert!(err.contains("panicked: no sessions for boom"), "{err}");
    assert!(ck.join("commits/0").exists() && !ck.join("commits/1").exists(), "the failed batch was not committed");
    assert!(take(&seen).is_empty(), "the failed batch wrote nothing");
    s.stop_all().await.ok();

    let s = session(&env, tmp.path(), &clock);
    let df = s.read_stream().format("memory").schema(words()).name("ev2").load().await.unwrap();
    let df = df
        .group_by_key(&["key"])
        .unwrap()
        .flat_map_groups_with_state(
            OutputMode::Append,
            GroupStateTimeout::NoTimeout,
            key_value(),
            |_key: &GroupKey, _rows: &[RecordBatch], _state: &mut GroupState<bool>| {
                Ok(vec![RecordBatch::try_new(
                    Arc::new(Schema::new(vec![Field::new("flag", DataType::Boolean, false)])),
                    vec![Arc::new(BooleanArray::from(vec![true])) as Arc<dyn Array>],
                )?])
            },
        )
        .unwrap();
    let q = start(df, "shape", OutputMode::Append, &tmp.path().join("ck2"), &seen).await.unwrap();
    env.streams.get("ev2").unwrap().push_rows(&["z"]).unwrap();
    let err = q.process_all_available().await.unwrap_err().to_string();
    assert!(err.contains("returned rows of schema (flag: Boolean)"), "{err}");
    assert!(err.contains("declared (key: Utf8, value: Int64)"), "{err}");
    s.stop_all().await.ok();
}

/// The sessionization example's binary, built by `cargo test` next to this
/// test binary (`target/<profile>/examples/sessionize`).
fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    profile_dir.join("examples").join(name)
}

#[test]
fn the_sessionize_example_writes_the_sessions_of_the_example_clicks() {
    use datafusion::arrow::array::TimestampMicrosecondArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bin = example_binary("sessionize");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds the examples (cargo build --example sessionize)",
        bin.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sessions");
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/clicks");
    let status =
        std::process::Command::new(&bin).arg("--input").arg(&input).arg("--output").arg(&out).status().unwrap();
    assert!(status.success(), "sessionize exited with {status}");
    let mut sessions = vec![];
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap().build().unwrap();
            for b in reader {
                let b = b.unwrap();
                let user = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                let start = b.column(1).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
                let end = b.column(2).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
                let n = b.column(3).as_any().downcast_ref::<Int64Array>().unwrap();
                for i in 0..b.num_rows() {
                    sessions.push((user.value(i).to_string(), start.value(i), end.value(i), n.value(i)));
                }
            }
        }
    }
    sessions.sort();
    // 2026-01-01 10:mm:ss in µs since the epoch.
    let t = |m: i64, s: i64| (1_767_261_600 + m * 60 + s) * 1_000_000;
    let want = vec![
        ("alice".to_string(), t(0, 0), t(0, 30), 3),
        ("alice".to_string(), t(1, 50), t(2, 10), 2),
        ("bob".to_string(), t(0, 5), t(0, 20), 2),
        ("carol".to_string(), t(1, 30), t(1, 30), 1),
        ("carol".to_string(), t(3, 40), t(3, 40), 1),
    ];
    assert_eq!(sessions, want, "dave's session (10:09:00) stays open: the watermark never passes its timeout");
}

/// Runs `steps` (clock time, rows to push) through `build`'s query,
/// restarting the session after every batch when `restart` is set; returns
/// the rows of each step.
async fn scripted<F, Fut>(source: &str, steps: &[(i64, Vec<String>)], restart: bool, build: F) -> Vec<Vec<String>>
where
    F: Fn(SluiceSession) -> Fut,
    Fut: std::future::Future<Output = (SluiceSession, DataFrame)>,
{
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let clock = Arc::new(ManualClock::new(0));
    let seen: Seen = Arc::default();
    let (mut s, df) = build(session(&env, tmp.path(), &clock)).await;
    let mut q = start(df, "scripted", OutputMode::Update, &ck, &seen).await.unwrap();
    let mut out = vec![];
    for (t, rows) in steps {
        if !rows.is_empty() {
            env.streams.get(source).unwrap().push_rows(rows).unwrap();
        }
        clock.set(*t);
        q.process_all_available().await.unwrap();
        out.push(take(&seen));
        if restart {
            s.stop_all().await.unwrap();
            let (s2, df) = build(session(&env, tmp.path(), &clock)).await;
            s = s2;
            q = start(df, "scripted", OutputMode::Update, &ck, &seen).await.unwrap();
        }
    }
    s.stop_all().await.unwrap();
    out
}

#[tokio::test]
async fn timeouts_behave_the_same_with_a_restart_after_every_batch() {
    let v = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let processing = [
        (1_000, v(&["a"])),
        (2_000, v(&["b"])),
        (12_000, v(&["b"])),
        (23_000, v(&["c"])),
        (43_000, v(&["c"])),
        (53_001, v(&[])),
    ];
    let build_pt = |s: SluiceSession| async move {
        let df = counting_with_processing_timeout(&s).await;
        (s, df)
    };
    let plain = scripted("ev", &processing, false, build_pt).await;
    assert_eq!(
        plain,
        vec![v(&["a,1"]), v(&["b,1"]), v(&["a,-1", "b,2"]), v(&["b,-1", "c,1"]), v(&["c,2"]), v(&["c,-1"])]
    );
    assert_eq!(scripted("ev", &processing, true, build_pt).await, plain);

    let event = [
        (0, vec![at("a", 11), at("a", 13), at("a", 15)]),
        (0, vec![at("a", 4)]),
        (0, vec![at("a", 10)]),
        (0, vec![at("b", 31)]),
    ];
    let build_et = |s: SluiceSession| async move {
        let df = max_event_time(&s).await;
        (s, df)
    };
    let plain = scripted("tv", &event, false, build_et).await;
    assert_eq!(plain, vec![v(&["a,15"]), v(&[]), v(&["a,15"]), v(&["a,-1", "b,31"])]);
    assert_eq!(scripted("tv", &event, true, build_et).await, plain);
}
