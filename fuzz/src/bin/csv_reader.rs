//! Fuzz target: the files source's CSV reader, with and without a header,
//! in every malformed-row mode, must return rows or an error, never panic.
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use sluice_sources::files::{parse_file, FileFormat, ParseMode, ParseSettings};

fn main() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("x", DataType::Float64, true),
    ]));
    afl::fuzz!(|data: &[u8]| {
        for header in [false, true] {
            for mode in [ParseMode::Permissive, ParseMode::DropMalformed, ParseMode::FailFast] {
                let settings = ParseSettings { format: FileFormat::Csv, header, mode };
                let _ = parse_file(bytes::Bytes::copy_from_slice(data), "fuzz.csv", &schema, &settings, None);
            }
        }
    });
}
