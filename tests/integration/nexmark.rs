//! Every Nexmark query Sluice runs gives the same result as DataFusion's
//! batch execution of the same query over the same generated events.

use std::path::Path;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use sluice::bench::{generate, load_query, query_names, run_batch, run_stream, StreamSetup};
use sluice::stt::render_batches;
use sluice::OutputMode;

/// An update-mode output applied in order as upserts on `key`: the last
/// row of each key, rendered.
fn upserted(batches: &[Vec<datafusion::arrow::record_batch::RecordBatch>], key: &[String]) -> Vec<String> {
    let mut last = std::collections::BTreeMap::new();
    for b in batches.iter().flatten() {
        let rows = render_batches(std::slice::from_ref(b)).unwrap();
        let cols: Vec<_> = key.iter().map(|k| b.column_by_name(k).unwrap_or_else(|| panic!("no column {k}"))).collect();
        for (i, row) in rows.into_iter().enumerate() {
            let k: Vec<String> =
                cols.iter().map(|c| datafusion::arrow::util::display::array_value_to_string(c, i).unwrap()).collect();
            last.insert(k, row);
        }
    }
    last.into_values().collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_matches_datafusion_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 200_000).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nexmark");
    let names = query_names(&dir).unwrap();
    assert!(names.len() >= 10, "{names:?}");
    let mut checked_every_third = vec![];
    for name in names {
        let q = load_query(&dir, &name).unwrap();
        let ck = tmp.path().join(format!("ck-{name}"));
        // Update-mode queries are compared on their final result (complete
        // mode), or, when they have an upsert key (a Top-N), on their
        // output upserted on it.
        let mode = (q.mode == OutputMode::Update && q.upsert_key.is_empty()).then_some(OutputMode::Complete);
        let setup = StreamSetup { mode, keep: true, state_checkpoint_interval: None };
        let (report, batches) = run_stream(&data, &q, &ck, setup).await.unwrap();
        assert!(report.batches >= 3, "{name}: one file per batch: {report:?}");
        let got: Vec<String> = match mode {
            Some(_) => render_batches(batches.iter().rev().find(|b| !b.is_empty()).unwrap()).unwrap(),
            None if !q.upsert_key.is_empty() => upserted(&batches, &q.upsert_key),
            None => batches.iter().flat_map(|b| render_batches(b).unwrap()).collect(),
        };
        // With the state checkpointed every third batch, where the query's
        // operators allow it, every batch's output is the same (queries on
        // processing time differ between any two runs).
        let every_third = StreamSetup { state_checkpoint_interval: Some(3), ..setup };
        match run_stream(&data, &q, &tmp.path().join(format!("ck3-{name}")), every_third).await {
            Ok((_, deferred)) if q.no_batch_equivalent.is_none() => {
                let render = |b: &Vec<Vec<_>>| b.iter().map(|b| sorted(render_batches(b).unwrap())).collect::<Vec<_>>();
                let (deferred, every) = (render(&deferred), render(&batches));
                let differ = deferred.iter().zip(&every).position(|(a, b)| a != b);
                assert!(
                    deferred.len() == every.len() && differ.is_none(),
                    "{name}: with state_checkpoint_interval 3, batch {differ:?} differs ({} and {} batches)",
                    deferred.len(),
                    every.len()
                );
                checked_every_third.push(name.clone());
            }
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("state_checkpoint_interval"), "{name}: {e}"),
        }
        if q.no_batch_equivalent.is_some() {
            assert!(report.rows_out > 0, "{name}: emits rows");
            continue;
        }
        let (_, mut want) = run_batch(&data, &q).await.unwrap();
        if let Some(col) = &q.closed_by {
            // Only windows the final watermark closed are emitted in append mode.
            let wm = report.watermark_ms.expect("a watermark");
            want = want
                .iter()
                .map(|b| {
                    let t = cast(b.column_by_name(col).unwrap(), &DataType::Timestamp(TimeUnit::Millisecond, None))
                        .unwrap();
                    let keep = t
                        .as_primitive::<TimestampMillisecondType>()
                        .iter()
                        .map(|v| Some(v.is_some_and(|v| v <= wm)))
                        .collect();
                    filter_record_batch(b, &keep).unwrap()
                })
                .collect();
        }
        let want = render_batches(&want).unwrap();
        assert!(!want.is_empty(), "{name}: the query selects something");
        let (got, want) = (sorted(got), sorted(want));
        if got != want {
            let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
            panic!("{name}: Sluice ({} rows) differs from DataFusion batch ({} rows); missing {missing:?}, extra {extra:?}", got.len(), want.len());
        }
    }
    for q in ["tumble_count", "q5_hop_count", "q7", "q17", "q16"] {
        assert!(
            checked_every_third.iter().any(|n| n == q),
            "{q} ran with state_checkpoint_interval: {checked_every_third:?}"
        );
    }
}
