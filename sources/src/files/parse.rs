//! Parsing one file of the `files` source into record batches of the
//! declared schema, honouring the malformed-record `mode`.
//!
//! CSV, JSON (one object per line) and text files are first split into
//! string fields per row, then each column is cast to its declared type; a
//! value that does not cast makes its row malformed. An empty CSV field and a
//! missing or `null` JSON field are NULL. Parquet files are read
//! with the Arrow reader and their columns matched by name.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, StringArray};
use arrow::compute::{can_cast_types, cast_with_options, filter, CastOptions};
use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::reader::ChunkReader;
use sluice_engine::{Result, SluiceError};
use tracing::warn;

/// The file formats the `files` source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileFormat {
    /// Comma-separated values, columns by position.
    Csv,
    /// JSON Lines: one object per line, columns by name.
    Json,
    /// Apache Parquet, columns by name (the default, as in Spark).
    #[default]
    Parquet,
    /// One row per line, in a single string column.
    Text,
}

impl FromStr for FileFormat {
    type Err = SluiceError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(Self::Csv),
            "json" | "jsonl" | "ndjson" => Ok(Self::Json),
            "parquet" => Ok(Self::Parquet),
            "text" | "txt" => Ok(Self::Text),
            _ => Err(SluiceError::InvalidOption {
                option: "format".into(),
                value: s.into(),
                reason: "valid formats are csv, json, parquet, text".into(),
            }),
        }
    }
}

/// What to do with a record that cannot be parsed (Spark's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParseMode {
    /// Keep the row; fields that cannot be parsed become NULL.
    #[default]
    Permissive,
    /// Drop the row.
    DropMalformed,
    /// Fail the query with an error naming the file and line.
    FailFast,
}

impl FromStr for ParseMode {
    type Err = SluiceError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "permissive" => Ok(Self::Permissive),
            "dropmalformed" | "drop_malformed" => Ok(Self::DropMalformed),
            "failfast" | "fail_fast" => Ok(Self::FailFast),
            _ => Err(SluiceError::InvalidOption {
                option: "mode".into(),
                value: s.into(),
                reason: "valid modes are permissive, dropmalformed, failfast".into(),
            }),
        }
    }
}

/// How to parse the files of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseSettings {
    /// File format.
    pub format: FileFormat,
    /// CSV: the first line is a header (skipped).
    pub header: bool,
    /// Malformed-record handling.
    pub mode: ParseMode,
}

/// Check that `schema` can be read in `format`.
pub fn check_schema(format: FileFormat, schema: &SchemaRef) -> std::result::Result<(), String> {
    if schema.fields().is_empty() {
        return Err("the schema has no columns".into());
    }
    if format == FileFormat::Text && (schema.fields().len() != 1 || !is_string(schema.field(0).data_type())) {
        return Err("the text format has exactly one VARCHAR column (for example `value VARCHAR`)".into());
    }
    if matches!(format, FileFormat::Csv | FileFormat::Json) {
        for f in schema.fields() {
            let t = f.data_type();
            let scalar = t.is_primitive() || is_string(t) || matches!(t, DataType::Boolean | DataType::Null);
            if !scalar || !can_cast_types(&DataType::Utf8, t) {
                return Err(format!(
                    "column '{}' has type {} which the {format:?} reader cannot parse; use a scalar type",
                    f.name(),
                    f.data_type()
                ));
            }
        }
    }
    Ok(())
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Parse the bytes of `file` (its display name, used in errors) into
/// batches of `schema`, keeping only `columns` (indices into `schema`) when
/// given. Parquet decodes only those columns, its row groups in parallel;
/// text formats parse whole rows (a malformed row is malformed whatever
/// columns the query reads) and drop the others.
pub fn parse_file(
    bytes: Bytes,
    file: &str,
    schema: &SchemaRef,
    settings: &ParseSettings,
    columns: Option<&[usize]>,
) -> Result<Vec<RecordBatch>> {
    let raw = match settings.format {
        FileFormat::Parquet => {
            let projected = match columns {
                Some(c) => Arc::new(schema.project(c)?),
                None => Arc::clone(schema),
            };
            return read_parquet(|| Ok(bytes.clone()), file, &projected);
        }
        FileFormat::Csv => split_csv(&bytes, file, schema, settings.header)?,
        FileFormat::Json => split_json(&bytes, schema),
        FileFormat::Text => split_text(&bytes),
    };
    let batches = finish(raw, file, &|line| format!("{file}:{line}"), schema, settings.mode)?.into_iter();
    Ok(match columns {
        Some(c) => batches.map(|b| b.project(c)).collect::<std::result::Result<Vec<_>, _>>()?,
        None => batches.collect(),
    })
}

/// String fields of the rows of one file, column by column.
#[derive(Debug)]
struct RawRows {
    columns: Vec<Vec<Option<String>>>,
    lines: Vec<u64>,
    problems: Vec<Option<String>>,
}

impl RawRows {
    fn new(width: usize) -> Self {
        Self { columns: vec![vec![]; width], lines: vec![], problems: vec![] }
    }

    fn push(&mut self, line: u64, mut values: Vec<Option<String>>, problem: Option<String>) {
        values.resize(self.columns.len(), None);
        for (col, v) in self.columns.iter_mut().zip(values) {
            col.push(v);
        }
        self.lines.push(line);
        self.problems.push(problem);
    }
}

/// Where each declared column is in the file's rows: by position without a
/// header; by name with one (exactly, else ignoring case), so a file whose
/// header lists the columns in another order still loads each value into its
/// own column. A header that does not name every declared column is an
/// error naming the file and the missing columns.
fn csv_positions(headers: Option<&csv::ByteRecord>, file: &str, schema: &SchemaRef) -> Result<Vec<usize>> {
    let Some(headers) = headers else { return Ok((0..schema.fields().len()).collect()) };
    let names: Vec<String> = headers.iter().map(|h| String::from_utf8_lossy(h).trim().to_string()).collect();
    let mut positions = Vec::with_capacity(schema.fields().len());
    let mut missing = vec![];
    for field in schema.fields() {
        let found = names
            .iter()
            .position(|n| n == field.name())
            .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(field.name())));
        match found {
            Some(p) => positions.push(p),
            None => missing.push(field.name().as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(SluiceError::Malformed {
            location: format!("{file}:1"),
            reason: format!(
                "the CSV header [{}] does not name the declared column(s) [{}]; with header = 'true' columns are \
                 bound by header name: rename the header fields, or set header = 'false' to bind by position",
                names.join(", "),
                missing.join(", ")
            ),
        });
    }
    if positions.iter().enumerate().any(|(i, p)| i != *p) {
        tracing::debug!(file, "CSV header order differs from the declared columns; binding by name");
    }
    Ok(positions)
}

fn split_csv(bytes: &[u8], file: &str, schema: &SchemaRef, header: bool) -> Result<RawRows> {
    let width = schema.fields().len();
    let mut reader = csv::ReaderBuilder::new().has_headers(header).flexible(true).from_reader(bytes);
    let headers: Option<csv::ByteRecord> = match header {
        true => Some(
            reader
                .byte_headers()
                .map_err(|e| SluiceError::Malformed {
                    location: format!("{file}:1"),
                    reason: format!("cannot read the CSV header: {e}"),
                })?
                .clone(),
        ),
        false => None,
    };
    let positions = match &headers {
        // An empty file has no header and no rows.
        Some(h) if h.is_empty() => return Ok(RawRows::new(width)),
        h => csv_positions(h.as_ref(), file, schema)?,
    };
    let expected = headers.as_ref().map_or(width, |h| h.len());
    let mut raw = RawRows::new(width);
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(SluiceError::Malformed { location: format!("{file}:{line}"), reason: e.to_string() });
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let mut problem =
            (record.len() != expected).then(|| format!("expected {expected} fields, found {}", record.len()));
        let mut values = Vec::with_capacity(width);
        for (i, &pos) in positions.iter().enumerate() {
            match record.get(pos).map(std::str::from_utf8) {
                None | Some(Ok("")) => values.push(None),
                Some(Ok(s)) => values.push(Some(s.to_string())),
                Some(Err(_)) => {
                    problem.get_or_insert_with(|| format!("field {} is not valid UTF-8", i + 1));
                    values.push(None);
                }
            }
        }
        raw.push(line, values, problem);
    }
    Ok(raw)
}

fn split_json(bytes: &[u8], schema: &SchemaRef) -> RawRows {
    let mut raw = RawRows::new(schema.fields().len());
    for (idx, line) in bytes.split(|b| *b == b'\n').enumerate() {
        push_json(&mut raw, idx as u64 + 1, line, schema);
    }
    raw
}

/// One JSON object (a line of a file, or a whole message) as a row; blank
/// input is no row.
fn push_json(raw: &mut RawRows, line_no: u64, bytes: &[u8], schema: &SchemaRef) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        raw.push(line_no, vec![], Some("the line is not valid UTF-8".into()));
        return;
    };
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => {
            let values = schema
                .fields()
                .iter()
                .map(|f| {
                    let v = map
                        .get(f.name())
                        .or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(f.name())).map(|(_, v)| v));
                    match v {
                        None | Some(serde_json::Value::Null) => None,
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        Some(other) => Some(other.to_string()),
                    }
                })
                .collect();
            raw.push(line_no, values, None);
        }
        Ok(_) => raw.push(line_no, vec![], Some("expected a JSON object".into())),
        Err(e) => raw.push(line_no, vec![], Some(format!("invalid JSON: {e}"))),
    }
}

/// Parse each of `records` (one record each: a Kafka message value, say) into
/// a row of `schema` in the CSV, JSON or text `format`, honouring `mode`. A
/// missing record (`None`) or a blank one is malformed. `what` names the
/// records in logs, `locate(i)` the `i`-th record in errors.
pub fn parse_records(
    records: &[Option<&[u8]>],
    what: &str,
    locate: &dyn Fn(usize) -> String,
    schema: &SchemaRef,
    format: FileFormat,
    mode: ParseMode,
) -> Result<Option<RecordBatch>> {
    let width = schema.fields().len();
    let mut raw = RawRows::new(width);
    for (i, record) in records.iter().enumerate() {
        let line = i as u64;
        let before = raw.lines.len();
        match (record, format) {
            (None, _) => raw.push(line, vec![], Some("the record has no value".into())),
            (Some(bytes), FileFormat::Json) => push_json(&mut raw, line, bytes, schema),
            (Some(bytes), FileFormat::Text) => {
                raw.push(line, vec![Some(String::from_utf8_lossy(bytes).into_owned())], None)
            }
            (Some(bytes), _) => {
                let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(*bytes);
                let mut rec = csv::StringRecord::new();
                match reader.read_record(&mut rec) {
                    Ok(true) => {
                        let problem =
                            (rec.len() != width).then(|| format!("expected {width} fields, found {}", rec.len()));
                        let values = rec.iter().map(|v| (!v.is_empty()).then(|| v.to_string())).collect();
                        raw.push(line, values, problem);
                    }
                    Ok(false) => {}
                    Err(e) => raw.push(line, vec![], Some(format!("invalid CSV: {e}"))),
                }
            }
        }
        if raw.lines.len() == before {
            raw.push(line, vec![], Some("the record is empty".into()));
        }
    }
    finish(raw, what, &|i| locate(i as usize), schema, mode)
}

fn split_text(bytes: &[u8]) -> RawRows {
    let mut raw = RawRows::new(1);
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return raw;
    }
    for (idx, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        raw.push(idx as u64 + 1, vec![Some(String::from_utf8_lossy(line).into_owned())], None);
    }
    raw
}

/// Cast the string columns to the schema, find the malformed rows and apply
/// the mode.
fn finish(
    mut raw: RawRows,
    file: &str,
    locate: &dyn Fn(u64) -> String,
    schema: &SchemaRef,
    mode: ParseMode,
) -> Result<Option<RecordBatch>> {
    let rows = raw.lines.len();
    if rows == 0 {
        return Ok(None);
    }
    // Rows that cannot be kept whatever the mode: a NULL in a NOT NULL column.
    let mut null_violation = vec![false; rows];
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let strings = StringArray::from(std::mem::take(&mut raw.columns[i]));
        let typed = cast_column(&strings, field)?;
        for row in 0..rows {
            if !typed.is_null(row) {
                continue;
            }
            if !field.is_nullable() {
                null_violation[row] = true;
            }
            if raw.problems[row].is_some() {
                continue;
            }
            if strings.is_valid(row) {
                raw.problems[row] = Some(format!(
                    "cannot parse '{}' as {} for column '{}'",
                    strings.value(row),
                    field.data_type(),
                    field.name()
                ));
            } else if !field.is_nullable() {
                raw.problems[row] = Some(format!("column '{}' is NOT NULL but the value is missing", field.name()));
            }
        }
        arrays.push(typed);
    }
    let keep: Vec<bool> = match mode {
        ParseMode::FailFast => {
            if let Some(row) = raw.problems.iter().position(Option::is_some) {
                return Err(SluiceError::Malformed {
                    location: locate(raw.lines[row]),
                    reason: raw.problems[row].take().unwrap_or_default(),
                });
            }
            vec![true; rows]
        }
        ParseMode::DropMalformed => raw.problems.iter().map(Option::is_none).collect(),
        ParseMode::Permissive => null_violation.iter().map(|v| !v).collect(),
    };
    let dropped = keep.iter().filter(|k| !**k).count();
    if dropped > 0 {
        if mode == ParseMode::Permissive {
            warn!(file, dropped, "dropped rows with a missing or unparseable value in a NOT NULL column");
        } else {
            warn!(file, dropped, "dropped malformed rows (mode = dropmalformed)");
        }
        let mask = BooleanArray::from(keep);
        arrays = arrays.iter().map(|a| filter(a, &mask)).collect::<std::result::Result<_, _>>()?;
    }
    if rows == dropped {
        return Ok(None);
    }
    Ok(Some(RecordBatch::try_new(Arc::clone(schema), arrays)?))
}

fn cast_column(strings: &StringArray, field: &FieldRef) -> Result<ArrayRef> {
    if field.data_type() == &DataType::Utf8 {
        return Ok(Arc::new(strings.clone()));
    }
    let options = CastOptions { safe: true, ..Default::default() };
    Ok(cast_with_options(strings, field.data_type(), &options)?)
}

/// Read the Parquet file at `path` (`file` is its display name), decoding
/// only the column chunks of `columns` (indices into `schema`): the other
/// columns' bytes are never read from disk.
pub fn read_parquet_file(
    path: &std::path::Path,
    file: &str,
    schema: &SchemaRef,
    columns: Option<&[usize]>,
) -> Result<Vec<RecordBatch>> {
    let projected = match columns {
        Some(c) => Arc::new(schema.project(c)?),
        None => Arc::clone(schema),
    };
    read_parquet(|| std::fs::File::open(path), file, &projected)
}

/// Read a Parquet file through `open_file` (called once per decoding thread).
fn read_parquet<T: ChunkReader + 'static>(
    open_file: impl Fn() -> std::io::Result<T> + Sync,
    file: &str,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let bad = |reason: String| SluiceError::Malformed { location: file.to_string(), reason };
    let open =
        || open_file().map_err(|e| bad(format!("cannot open the file ({e}); check that it exists and is readable")));
    let metadata = ArrowReaderMetadata::load(&open()?, ArrowReaderOptions::default())
        .map_err(|e| bad(format!("not a readable Parquet file ({e}); check the `format` option")))?;
    let file_schema = Arc::clone(metadata.schema());
    let find = |name: &str| {
        file_schema
            .index_of(name)
            .ok()
            .or_else(|| file_schema.fields().iter().position(|f| f.name().eq_ignore_ascii_case(name)))
    };
    let mut wanted: Vec<usize> = schema.fields().iter().filter_map(|f| find(f.name())).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let groups = metadata.metadata().num_row_groups();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(groups).max(1);
    let chunk = groups.div_ceil(threads).max(1);
    let read_groups = |row_groups: Vec<usize>| -> Result<Vec<RecordBatch>> {
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(open()?, metadata.clone());
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
        let reader = builder
            .with_projection(mask)
            .with_row_groups(row_groups)
            .with_batch_size(8192)
            .build()
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        let mut out = vec![];
        for batch in reader {
            let batch = batch.map_err(|e| bad(format!("cannot read: {e}")))?;
            out.push(conform(&batch, schema, &bad)?);
        }
        Ok(out)
    };
    if threads <= 1 {
        return read_groups((0..groups).collect());
    }
    // Decode the row groups in `threads` contiguous runs at once, keeping file order.
    let runs: Vec<Vec<usize>> = (0..groups).collect::<Vec<_>>().chunks(chunk).map(<[usize]>::to_vec).collect();
    let results: Vec<Result<Vec<RecordBatch>>> = std::thread::scope(|scope| {
        let read_groups = &read_groups;
        let handles: Vec<_> = runs.into_iter().map(|run| scope.spawn(move || read_groups(run))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(bad("a Parquet decoding thread panicked".into()))))
            .collect()
    });
    let mut out = vec![];
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// Match a Parquet batch's columns to the declared schema by name.
fn conform(batch: &RecordBatch, schema: &SchemaRef, bad: &dyn Fn(String) -> SluiceError) -> Result<RecordBatch> {
    let got = batch.schema();
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let idx = got
            .index_of(field.name())
            .ok()
            .or_else(|| got.fields().iter().position(|f| f.name().eq_ignore_ascii_case(field.name())));
        let array = match idx {
            Some(i) => {
                let col = batch.column(i);
                if col.data_type() == field.data_type() {
                    Arc::clone(col)
                } else {
                    cast_with_options(col, field.data_type(), &CastOptions { safe: false, ..Default::default() })
                        .map_err(|e| {
                            bad(format!(
                                "column '{}' is {} in the file and cannot be read as {}: {e}",
                                field.name(),
                                col.data_type(),
                                field.data_type()
                            ))
                        })?
                }
            }
            None if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
            None => return Err(bad(format!("the NOT NULL column '{}' is missing from the file", field.name()))),
        };
        if !field.is_nullable() && array.null_count() > 0 {
            return Err(bad(format!("the NOT NULL column '{}' holds NULL values", field.name())));
        }
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), arrays)?)
}
