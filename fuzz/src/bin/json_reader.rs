//! Fuzz target: the files source's JSON Lines and Parquet readers must
//! return rows or an error, never panic.
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use sluice_sources::files::{parse_file, FileFormat, ParseMode, ParseSettings};

fn main() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("name", DataType::Utf8, false),
    ]));
    afl::fuzz!(|data: &[u8]| {
        for format in [FileFormat::Json, FileFormat::Parquet] {
            for mode in [ParseMode::Permissive, ParseMode::FailFast] {
                let settings = ParseSettings { format, header: false, mode };
                let _ = parse_file(bytes::Bytes::copy_from_slice(data), "fuzz.dat", &schema, &settings, None);
            }
        }
    });
}
