//! The DStream operations of the seeds over the same state store:
//! `update_state_by_key`, `map_with_state` with an idle timeout, and
//! `transform` joining each batch with a table that changes between batches.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{JoinType, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::prelude::{col, lit};
use sluice::arbitrary::{transform, GroupKey, GroupState};
use sluice::stt::render_batches;
use sluice::{Environment, ManualClock, OutputMode, SluiceConfig, StreamingDataFrameExt};

type Seen = Arc<Mutex<Vec<(u64, Vec<String>)>>>;

fn words() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, true)]))
}

fn setup() -> (Environment, sluice::SluiceSession, tempfile::TempDir, Arc<ManualClock>) {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: tmp.path().join("default-checkpoints"),
        target_partitions: 2,
        ..Default::default()
    };
    let session = env.session(config, Arc::clone(&clock) as sluice::ClockRef);
    (env, session, tmp, clock)
}

async fn run(
    df: datafusion::dataframe::DataFrame,
    mode: OutputMode,
    ck: &std::path::Path,
) -> (sluice::StreamingQuery, Seen) {
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    let q = df
        .write_stream()
        .query_name("q")
        .output_mode(mode)
        .option("checkpoint", ck.display().to_string())
        .foreach_batch(move |id, batches| {
            let mut rows = render_batches(batches).unwrap_or_default();
            rows.sort();
            sink.lock().unwrap().push((id, rows));
            Ok(())
        })
        .start()
        .await
        .unwrap();
    (q, seen)
}

#[tokio::test]
async fn update_state_by_key_calls_every_key_each_batch_and_drops_state_on_none() {
    let (env, s, tmp, _clock) = setup();
    let df = s.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
    // A running count that forgets a word after a batch without it.
    let counts = df
        .group_by_key(&["key"])
        .unwrap()
        .update_state_by_key(DataType::Int64, |_k: &GroupKey, rows, count: Option<i64>| {
            let seen: i64 = rows.iter().map(|b| b.num_rows() as i64).sum();
            Ok(if seen == 0 { None } else { Some(count.unwrap_or(0) + seen) })
        })
        .unwrap();
    let (q, seen) = run(counts, OutputMode::Update, &tmp.path().join("ck")).await;
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["a", "b", "a"]).unwrap();
    q.process_all_available().await.unwrap();
    ev.push_rows(&["a"]).unwrap();
    q.process_all_available().await.unwrap();
    ev.push_rows(&["a", "c"]).unwrap();
    q.process_all_available().await.unwrap();
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            (0, vec!["a,2".to_string(), "b,1".into()]),
            // b had no rows: called with none, returned None, dropped.
            (1, vec!["a,3".into()]),
            (2, vec!["a,4".into(), "c,1".into()]),
        ]
    );
    let p = q.recent_progress();
    assert_eq!(p.last().unwrap().state_operators[0].num_rows_total, 2, "a and c keep state; b was dropped");
    s.stop_all().await.unwrap();
}

#[tokio::test]
async fn map_with_state_maps_each_row_and_times_out_idle_keys() {
    let (env, s, tmp, clock) = setup();
    let df = s.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
    let out =
        Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, false), Field::new("n", DataType::Int64, false)]));
    let mapped = df
        .group_by_key(&["key"])
        .unwrap()
        .map_with_state(Some("10 seconds"), out, |key: &GroupKey, row, state: &mut GroupState<i64>| {
            let k = key.values()[0].clone();
            if row.is_none() {
                return Ok(vec![k, ScalarValue::Int64(Some(-state.get_option().copied().unwrap_or(0)))]);
            }
            let n = state.get_option().copied().unwrap_or(0) + 1;
            state.update(n);
            Ok(vec![k, ScalarValue::Int64(Some(n))])
        })
        .unwrap();
    let (q, seen) = run(mapped, OutputMode::Append, &tmp.path().join("ck")).await;
    let ev = env.streams.get("ev").unwrap();
    clock.set(1_000);
    ev.push_rows(&["x", "x", "y"]).unwrap();
    q.process_all_available().await.unwrap();
    clock.set(5_000);
    ev.push_rows(&["y"]).unwrap();
    q.process_all_available().await.unwrap();
    // x idle since 1 s: times out after 11 s; y (5 s) after 15 s.
    clock.set(11_001);
    q.process_all_available().await.unwrap();
    clock.set(15_001);
    q.process_all_available().await.unwrap();
    let got: Vec<Vec<String>> = seen.lock().unwrap().iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(got, vec![vec!["x,1", "x,2", "y,1"], vec!["y,2"], vec!["x,-2"], vec!["y,-2"]]);
    let p = q.recent_progress();
    assert_eq!(p.last().unwrap().state_operators[0].num_rows_total, 0, "timed-out keys drop their state");
    s.stop_all().await.unwrap();
}

#[tokio::test]
async fn transform_joins_each_batch_with_a_table_that_changes_between_batches() {
    let (env, s, tmp, _clock) = setup();
    let df = s.read_stream().format("memory").schema(words()).name("ev").load().await.unwrap();
    let blocked_schema = Arc::new(Schema::new(vec![Field::new("bad", DataType::Utf8, true)]));
    let block = |word: &str| {
        MemTable::try_new(
            Arc::clone(&blocked_schema),
            vec![vec![datafusion::arrow::record_batch::RecordBatch::try_new(
                Arc::clone(&blocked_schema),
                vec![Arc::new(StringArray::from(vec![word]))],
            )
            .unwrap()]],
        )
        .unwrap()
    };
    let ctx = s.context().clone();
    ctx.register_table("blocked", Arc::new(block("spam"))).unwrap();
    let func_ctx = ctx.clone();
    let out = transform(df, move |batch, id| {
        let ctx = func_ctx.clone();
        async move {
            let blocked = ctx.table("blocked").await?;
            let kept = batch.join(blocked, JoinType::LeftAnti, &["key"], &["bad"], None)?;
            Ok(kept.select(vec![col("key"), lit(id as i64).alias("batch")])?)
        }
    })
    .await
    .unwrap();
    assert_eq!(out.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), vec!["key", "batch"]);
    let (q, seen) = run(out, OutputMode::Append, &tmp.path().join("ck")).await;
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["spam", "ham", "eggs"]).unwrap();
    q.process_all_available().await.unwrap();
    ctx.deregister_table("blocked").unwrap();
    ctx.register_table("blocked", Arc::new(block("ham"))).unwrap();
    ev.push_rows(&["spam", "ham"]).unwrap();
    q.process_all_available().await.unwrap();
    let got = seen.lock().unwrap().clone();
    assert_eq!(got, vec![(0, vec!["eggs,0".to_string(), "ham,0".into()]), (1, vec!["spam,1".into()])]);
    s.stop_all().await.unwrap();
}

#[tokio::test]
async fn reduce_by_key_and_window_emits_every_slide_with_and_without_an_inverse() {
    let mut outputs = vec![];
    for inverse in [false, true] {
        let (env, s, tmp, clock) = setup();
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let df = s.read_stream().format("memory").schema(schema).name("ev").load().await.unwrap();
        let keyed = df.group_by_key(&["key"]).unwrap();
        let sums = if inverse {
            keyed.reduce_by_key_and_window_inverse(
                "n",
                "20 seconds",
                "10 seconds",
                |a: i64, b: i64| a + b,
                |a: i64, b: i64| a - b,
            )
        } else {
            keyed.reduce_by_key_and_window("n", "20 seconds", "10 seconds", |a: i64, b: i64| a + b)
        }
        .unwrap();
        let (q, seen) = run(sums, OutputMode::Append, &tmp.path().join("ck")).await;
        let ev = env.streams.get("ev").unwrap();
        clock.set(1_000);
        ev.push_rows(&["a,1", "a,2", "b,5"]).unwrap();
        q.process_all_available().await.unwrap();
        clock.set(10_000);
        ev.push_rows(&["a,4"]).unwrap();
        q.process_all_available().await.unwrap();
        for t in [15_000, 20_000, 30_000, 40_000, 50_000] {
            clock.set(t);
            q.process_all_available().await.unwrap();
        }
        let got: Vec<Vec<String>> =
            seen.lock().unwrap().iter().map(|(_, r)| r.clone()).filter(|r| !r.is_empty()).collect();
        let p = q.recent_progress();
        assert_eq!(p.last().unwrap().state_operators[0].num_rows_total, 0, "every slice left the window");
        s.stop_all().await.unwrap();
        outputs.push(got);
    }
    assert_eq!(outputs[0], outputs[1], "the inverse gives the same windows");
    let values: Vec<Vec<String>> = outputs[0]
        .iter()
        .map(|batch| {
            batch
                .iter()
                .map(|r| {
                    let cols: Vec<&str> = r.split(',').collect();
                    format!("{}={}", cols[0], cols[cols.len() - 1])
                })
                .collect()
        })
        .collect();
    // Windows of 20 s every 10 s: ending at 10 s (a: 1+2, b: 5), at 20 s
    // (a: 3+4, b: 5), at 30 s (a: 4).
    assert_eq!(values, vec![vec!["a=3", "b=5"], vec!["a=7", "b=5"], vec!["a=4"]]);
}
