//! Tests of the `rate` source.

use std::path::Path;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use sluice_engine::clock::ManualClock;

use super::*;

fn source(meta: &Path, clock: Arc<ManualClock>, opts: &[(&str, &str)]) -> Arc<dyn Source> {
    let options: Options = opts.iter().map(|(k, v)| (*k, *v)).collect();
    let schema = RateSourceFactory.default_schema(&options).unwrap();
    let definition = SourceDefinition { name: "r".into(), connector: "rate".into(), options, schema, watermark: None };
    RateSourceFactory.validate(&definition).unwrap();
    RateSourceFactory.create(SourceContext { definition, metadata_path: meta.to_str().unwrap().into(), clock }).unwrap()
}

fn values(batches: &[RecordBatch]) -> Vec<i64> {
    batches.iter().flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec()).collect()
}

fn timestamps_ms(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<TimestampNanosecondType>().values().to_vec())
        .map(|ns| ns / 1_000_000)
        .collect()
}

#[tokio::test]
async fn offsets_follow_the_manual_clock() {
    let meta = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10_000));
    let src = source(meta.path(), Arc::clone(&clock), &[("rows_per_second", "10")]);
    assert_eq!(src.latest_offset(None).await.unwrap(), None, "no rows at the start time");
    clock.advance(Duration::from_secs(1));
    let o1 = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(o1, json!(10));
    clock.advance(Duration::from_millis(250));
    let o2 = src.latest_offset(Some(&o1)).await.unwrap().unwrap();
    assert_eq!(o2, json!(12));
    assert_eq!(src.latest_offset(Some(&o2)).await.unwrap(), Some(json!(12)), "clock did not move");

    let b = src.get_batch(None, &o1).await.unwrap();
    assert_eq!(values(&b), (0..10).collect::<Vec<_>>());
    assert_eq!(timestamps_ms(&b), (0..10).map(|i| 10_000 + i * 100).collect::<Vec<_>>());
    let b = src.get_batch(Some(&o1), &o2).await.unwrap();
    assert_eq!(values(&b), vec![10, 11]);
    assert_eq!(timestamps_ms(&b), vec![11_000, 11_100]);
    assert_eq!(b[0].schema(), rate_schema());
}

#[tokio::test]
async fn explicit_start_time_and_fractional_rate() {
    let meta = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(3_500));
    let src = source(meta.path(), Arc::clone(&clock), &[("rows_per_second", "3"), ("start_time", "1000")]);
    // 2.5 s at 3 rows/s: 7 rows.
    let end = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(end, json!(7));
    let b = src.get_batch(Some(&json!(3)), &end).await.unwrap();
    assert_eq!(values(&b), vec![3, 4, 5, 6]);
    assert_eq!(timestamps_ms(&b), vec![2_000, 2_333, 2_666, 3_000]);
}

#[tokio::test]
async fn restart_continues_the_same_sequence() {
    let meta = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(50_000));
    let src = source(meta.path(), Arc::clone(&clock), &[("rows_per_second", "2")]);
    assert_eq!(src.latest_offset(None).await.unwrap(), None);
    clock.advance(Duration::from_secs(2));
    let end = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(end, json!(4));
    let first = src.get_batch(None, &end).await.unwrap();
    drop(src);

    clock.advance(Duration::from_secs(3));
    let src = source(meta.path(), Arc::clone(&clock), &[("rows_per_second", "2")]);
    // The start time came from the checkpoint, not from the clock at restart.
    let next = src.latest_offset(Some(&end)).await.unwrap().unwrap();
    assert_eq!(next, json!(10));
    let replay = src.get_batch(None, &end).await.unwrap();
    assert_eq!(first, replay, "a replay after restart gives the same rows");
    assert_eq!(timestamps_ms(&src.get_batch(Some(&end), &next).await.unwrap())[0], 52_000);
}

#[tokio::test]
async fn num_partitions_splits_the_range() {
    let meta = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let src = source(meta.path(), Arc::clone(&clock), &[("rows_per_second", "9"), ("num_partitions", "3")]);
    src.latest_offset(None).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch(None, &end).await.unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(values(&b), (0..9).collect::<Vec<_>>());
}

#[test]
fn options_and_schema_are_checked() {
    assert_eq!(RateSourceFactory.valid_options(), &["rows_per_second", "num_partitions", "start_time"]);
    let parse = |kv: &[(&str, &str)]| RateOptions::parse(&kv.iter().map(|(k, v)| (*k, *v)).collect());
    let d = parse(&[]).unwrap();
    assert_eq!((d.rows_per_second, d.num_partitions, d.start_time), (1, 1, None));
    assert!(parse(&[("rows_per_second", "0")]).is_err());
    assert!(parse(&[("rows_per_second", "fast")]).unwrap_err().to_string().contains("rows_per_second"));
    assert!(parse(&[("start_time", "yesterday")]).is_err());
    let bad = SourceDefinition {
        name: "r".into(),
        connector: "rate".into(),
        options: Options::new(),
        schema: Arc::new(Schema::new(vec![Field::new("word", DataType::Utf8, true)])),
        watermark: None,
    };
    let e = RateSourceFactory.validate(&bad).unwrap_err().to_string();
    assert!(e.contains("word") && e.contains("timestamp TIMESTAMP, value BIGINT"), "{e}");
}

/// Regression (issue 9, case 7): an absurd `rows_per_second` hung with memory
/// climbing; a query far behind built one unbounded batch.
#[tokio::test]
async fn absurd_rates_are_refused_and_batches_are_bounded() {
    let parse = |v: &str| RateOptions::parse(&[("rows_per_second", v)].into_iter().collect());
    let e = parse("1000000000000").unwrap_err().to_string();
    assert!(e.contains("rows_per_second") && e.contains("at most 10000000"), "{e}");
    assert!(parse("10000000").is_ok());
    // A start time a day ago at the highest rate: each trigger reads at most
    // MAX_ROWS_PER_TRIGGER rows and later triggers catch up.
    let meta = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(86_400_000));
    let src = source(meta.path(), clock, &[("rows_per_second", "10000000"), ("start_time", "0")]);
    let o1 = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(o1, json!(MAX_ROWS_PER_TRIGGER));
    let o2 = src.latest_offset(Some(&o1)).await.unwrap().unwrap();
    assert_eq!(o2, json!(2 * MAX_ROWS_PER_TRIGGER));
}

/// `available_now` over a rate source read nothing and said nothing: it now
/// reads the rows generated by its start, or refuses when there are none.
#[tokio::test]
async fn available_now_reads_what_was_generated_or_says_why_not() {
    let meta = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10_000));
    let src = source(meta.path(), Arc::clone(&clock), &[("rows_per_second", "10")]);
    let e = src.prepare_for_available_now().await.unwrap_err().to_string();
    assert!(e.contains("available_now") && e.contains("processing_time"), "{e}");
    let meta = tempfile::tempdir().unwrap();
    let src = source(meta.path(), Arc::clone(&clock), &[("rows_per_second", "10"), ("start_time", "9000")]);
    src.prepare_for_available_now().await.unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(src.latest_offset(None).await.unwrap(), Some(json!(10)), "frozen at the rows of the first second");
}
