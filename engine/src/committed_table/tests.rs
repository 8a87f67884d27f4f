//! Tests of external tables over `files` sink output directories.

use std::path::Path;

use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::arrow::datatypes::Int64Type;

use crate::checkpoint::CheckpointDir;
use crate::manifest::{ManifestEntry, ManifestFile, MANIFEST_DIR};
use crate::{ConnectorRegistry, SluiceSession};

fn write(dir: &Path, relative: &str, body: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

async fn commit(dir: &Path, batch_id: u64, files: &[&str]) {
    let log = CheckpointDir::open(dir.to_str().unwrap()).unwrap().child(MANIFEST_DIR);
    let files = files.iter().map(|f| ManifestFile { path: (*f).into(), rows: 1, size: 1 }).collect();
    log.write_json(&batch_id.to_string(), &ManifestEntry { batch_id, format: "csv".into(), files, query_id: None })
        .await
        .unwrap();
}

/// Run `sql` (one row, one BIGINT column) in `session`.
async fn scalar(session: &SluiceSession, sql: &str) -> i64 {
    let batches = session.context().sql(sql).await.unwrap().collect().await.unwrap();
    let column = batches[0].column(0);
    match column.as_any().downcast_ref::<Int64Array>() {
        Some(a) => a.value(0),
        None => column.as_primitive::<Int64Type>().value(0),
    }
}

/// `CREATE [OR REPLACE] EXTERNAL TABLE name STORED AS CSV LOCATION 'dir'` (with header).
async fn create(session: &SluiceSession, create: &str, name: &str, dir: &Path) {
    let sql = format!(
        "{create} EXTERNAL TABLE {name} STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
        dir.display()
    );
    session.context().sql(&sql).await.unwrap();
}

#[tokio::test]
async fn external_table_reads_only_committed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    write(out, "part-0-a.csv", "id,name\n1,a\n2,b\n");
    // Batch 1 crashed before its manifest entry: its file must not be read.
    write(out, "part-1-b.csv", "id,name\n3,c\n4,d\n5,e\n");
    commit(out, 0, &["part-0-a.csv"]).await;
    let session = SluiceSession::new(ConnectorRegistry::new());
    create(&session, "CREATE", "t", out).await;
    assert_eq!(scalar(&session, "SELECT count(*) FROM t").await, 2);
    assert_eq!(scalar(&session, "SELECT sum(id) FROM t").await, 3);

    // Without a manifest, every file is read (plain DataFusion behaviour).
    let plain = tmp.path().join("plain");
    write(&plain, "a.csv", "id,name\n1,a\n2,b\n");
    write(&plain, "b.csv", "id,name\n3,c\n");
    create(&session, "CREATE", "p", &plain).await;
    assert_eq!(scalar(&session, "SELECT count(*) FROM p").await, 3);
}

#[tokio::test]
async fn partitioned_output_and_empty_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    write(&out, "word=a/part-0-a.csv", "n\n1\n");
    write(&out, "word=b/part-0-b.csv", "n\n2\n");
    write(&out, "word=a/part-1-c.csv", "n\n100\n");
    commit(&out, 0, &["word=a/part-0-a.csv", "word=b/part-0-b.csv"]).await;
    let session = SluiceSession::new(ConnectorRegistry::new());
    create(&session, "CREATE", "t", &out).await;
    assert_eq!(scalar(&session, "SELECT count(*) FROM t").await, 2);
    assert_eq!(scalar(&session, "SELECT sum(n) FROM t WHERE word = 'a'").await, 1);
    assert_eq!(scalar(&session, "SELECT sum(n) FROM t").await, 3);

    // A later commit is seen once the table is re-created.
    commit(&out, 1, &["word=a/part-1-c.csv"]).await;
    assert_eq!(scalar(&session, "SELECT sum(n) FROM t").await, 3, "snapshot at CREATE");
    create(&session, "CREATE OR REPLACE", "t", &out).await;
    assert_eq!(scalar(&session, "SELECT sum(n) FROM t WHERE word = 'a'").await, 101);

    // Only an uncommitted file: the table is empty.
    let empty = tmp.path().join("empty");
    write(&empty, "part-0-x.csv", "n\n7\n");
    std::fs::create_dir_all(empty.join(MANIFEST_DIR)).unwrap();
    create(&session, "CREATE", "e", &empty).await;
    assert_eq!(scalar(&session, "SELECT count(*) FROM e").await, 0);
}

#[tokio::test]
async fn parquet_and_declared_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let session = SluiceSession::new(ConnectorRegistry::new());
    for (file, rows) in [("part-0-a.parquet", "(1), (2)"), ("part-1-b.parquet", "(10), (20), (30)")] {
        let path = out.join(file);
        let sql = format!("COPY (SELECT column1 AS n FROM (VALUES {rows})) TO '{}' STORED AS PARQUET", path.display());
        session.context().sql(&sql).await.unwrap().collect().await.unwrap();
    }
    commit(&out, 0, &["part-1-b.parquet"]).await;
    let sql = format!("CREATE EXTERNAL TABLE q STORED AS PARQUET LOCATION '{}'", out.display());
    session.context().sql(&sql).await.unwrap();
    assert_eq!(scalar(&session, "SELECT sum(n) FROM q").await, 60);
    let sql = format!("CREATE EXTERNAL TABLE d (n BIGINT) STORED AS PARQUET LOCATION '{}'", out.display());
    session.context().sql(&sql).await.unwrap();
    assert_eq!(scalar(&session, "SELECT count(*) FROM d").await, 3);
}
