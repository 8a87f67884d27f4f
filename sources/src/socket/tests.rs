//! Tests of the `socket` source.

use std::time::Duration;

use arrow::array::AsArray;
use sluice_engine::SystemClock;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::*;

fn source(port: u16) -> Arc<dyn Source> {
    let options: Options = [("host", "127.0.0.1".to_string()), ("port", port.to_string())].into_iter().collect();
    let schema = SocketSourceFactory.default_schema(&options).unwrap();
    let definition =
        SourceDefinition { name: "lines".into(), connector: "socket".into(), options, schema, watermark: None };
    SocketSourceFactory.validate(&definition).unwrap();
    SocketSourceFactory
        .create(SourceContext { definition, metadata_path: String::new(), clock: Arc::new(SystemClock) })
        .unwrap()
}

/// Poll `latest_offset` until it reaches `want` (or give up after 5 s).
async fn wait_for(src: &Arc<dyn Source>, start: Option<&SourceOffset>, want: u64) -> SourceOffset {
    for _ in 0..500 {
        if let Some(o) = src.latest_offset(start).await.unwrap() {
            if o == json!(want) {
                return o;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the socket source never reached offset {want}");
}

fn lines(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(0).as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn reads_lines_from_a_local_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let src = source(port);
    assert!(!src.replayable());
    let (mut conn, _) = listener.accept().await.unwrap();
    assert_eq!(src.latest_offset(None).await.unwrap(), None, "nothing sent yet");
    conn.write_all(b"hello world\r\nsecond").await.unwrap();
    conn.write_all(b" line\n").await.unwrap();
    let o2 = wait_for(&src, None, 2).await;
    assert_eq!(lines(&src.get_batch(None, &o2).await.unwrap()), vec!["hello world", "second line"]);
    assert_eq!(lines(&src.get_batch(Some(&json!(1)), &o2).await.unwrap()), vec!["second line"]);
    src.commit(&o2).await.unwrap();

    conn.write_all(b"third\n").await.unwrap();
    let o3 = wait_for(&src, Some(&o2), 3).await;
    assert_eq!(lines(&src.get_batch(Some(&o2), &o3).await.unwrap()), vec!["third"]);
    let e = src.get_batch(None, &o2).await.unwrap_err().to_string();
    assert!(e.contains("cannot replay"), "{e}");
    src.stop().await.unwrap();
}

#[tokio::test]
async fn restart_numbers_lines_after_the_checkpoint_offset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let src = source(listener.local_addr().unwrap().port());
    let (mut conn, _) = listener.accept().await.unwrap();
    let start = json!(5);
    assert_eq!(src.latest_offset(Some(&start)).await.unwrap(), Some(json!(5)));
    conn.write_all(b"x\n").await.unwrap();
    let end = wait_for(&src, Some(&start), 6).await;
    assert_eq!(lines(&src.get_batch(Some(&start), &end).await.unwrap()), vec!["x"]);
}

#[tokio::test]
async fn connection_refused_is_a_clear_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let src = source(port);
    let mut last = None;
    for _ in 0..500 {
        match src.latest_offset(None).await {
            Err(e) => {
                last = Some(e.to_string());
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let e = last.expect("an error");
    assert!(e.contains(&format!("127.0.0.1:{port}")) && e.contains("cannot connect"), "{e}");
}

#[test]
fn options_and_schema_are_checked() {
    assert_eq!(SocketSourceFactory.valid_options(), &["host", "port"]);
    let parse = |kv: &[(&str, &str)]| SocketOptions::parse(&kv.iter().map(|(k, v)| (*k, *v)).collect());
    assert_eq!(parse(&[("host", "h"), ("port", "9999")]).unwrap(), SocketOptions { host: "h".into(), port: 9999 });
    assert!(parse(&[("host", "h")]).unwrap_err().to_string().contains("port"));
    assert!(parse(&[("port", "1")]).is_err());
    assert!(parse(&[("host", "h"), ("port", "99999")]).is_err());
    let def = SourceDefinition {
        name: "s".into(),
        connector: "socket".into(),
        options: [("host", "h"), ("port", "1")].into_iter().collect(),
        schema: Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ])),
        watermark: None,
    };
    assert!(SocketSourceFactory.validate(&def).unwrap_err().to_string().contains("value VARCHAR"));
}
