//! Parsing `.stt` files into records (see STREAMTEST.md).

/// One directive with its body (field names follow the directive syntax).
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `statement ok` + SQL.
    StatementOk { sql: String },
    /// `statement error <text>` + SQL.
    StatementError { expected: String, sql: String },
    /// `insert <source>` + rows.
    Insert { source: String, rows: Vec<String> },
    /// `file <path>` + lines.
    File { path: String, lines: Vec<String> },
    /// `trigger`.
    Trigger,
    /// `check <sink> [ordered]` + `----` + rows.
    Check { sink: String, ordered: bool, rows: Vec<String> },
    /// `query [ordered]` + SQL + `----` + rows.
    Query { sql: String, ordered: bool, rows: Vec<String> },
    /// `watermark <sink>` + `----` + value.
    Watermark { sink: String, expected: String },
    /// `restart`.
    Restart,
    /// `advance <interval>`.
    Advance { interval: String },
}

/// A record and the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// 1-based line number of the directive.
    pub line: usize,
    /// The record.
    pub record: Record,
}

/// Parse the text of a stream test.
pub fn parse_stt(text: &str) -> Result<Vec<Located>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i + 1;
        // The record body: until a blank line.
        let mut body = vec![];
        i += 1;
        while i < lines.len() && !lines[i].trim().is_empty() {
            if !lines[i].starts_with('#') {
                body.push(lines[i].trim_end().to_string());
            }
            i += 1;
        }
        let mut words = line.split_whitespace();
        let directive = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let split_dashes = |body: &[String]| -> Result<(Vec<String>, Vec<String>), String> {
            match body.iter().position(|l| l.trim() == "----") {
                Some(p) => Ok((body[..p].to_vec(), body[p + 1..].to_vec())),
                None => Err(format!("line {start}: '{directive}' needs a '----' line before the expected rows")),
            }
        };
        let record = match directive {
            "statement" => match rest.first().copied() {
                Some("ok") => Record::StatementOk { sql: body.join("\n") },
                Some("error") => Record::StatementError { expected: rest[1..].join(" "), sql: body.join("\n") },
                _ => return Err(format!("line {start}: expected 'statement ok' or 'statement error <text>'")),
            },
            "insert" => Record::Insert { source: rest.join(" "), rows: body },
            "file" => Record::File { path: rest.join(" "), lines: body },
            "trigger" => Record::Trigger,
            "restart" => Record::Restart,
            "advance" => Record::Advance { interval: rest.join(" ") },
            "check" => {
                let sink = rest.first().ok_or_else(|| format!("line {start}: 'check' needs a sink name"))?.to_string();
                let (_, rows) = split_dashes(&body)?;
                Record::Check { sink, ordered: rest.get(1) == Some(&"ordered"), rows }
            }
            "query" => {
                let (sql, rows) = split_dashes(&body)?;
                Record::Query { sql: sql.join("\n"), ordered: rest.first() == Some(&"ordered"), rows }
            }
            "watermark" => {
                let sink =
                    rest.first().ok_or_else(|| format!("line {start}: 'watermark' needs a sink name"))?.to_string();
                let (_, rows) = split_dashes(&body)?;
                Record::Watermark { sink, expected: rows.join("\n") }
            }
            other => return Err(format!("line {start}: unknown directive '{other}'")),
        };
        out.push(Located { line: start, record });
    }
    Ok(out)
}

/// Insert a `restart` after every `trigger` (the `--restart-every-batch` mode).
pub fn with_restart_after_triggers(records: Vec<Located>) -> Vec<Located> {
    let mut out = vec![];
    for r in records {
        let is_trigger = r.record == Record::Trigger;
        let line = r.line;
        out.push(r);
        if is_trigger {
            out.push(Located { line, record: Record::Restart });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        let text = "# c\nstatement ok\nCREATE SOURCE s (a INT)\nWITH (connector='memory')\n\ninsert s\n1\n2\n\ntrigger\n\ncheck x ordered\n----\n1\n\ncheck y\n----\n\nquery\nSELECT 1\n----\n1\n";
        let r = parse_stt(text).unwrap();
        assert_eq!(r.len(), 6);
        assert!(matches!(&r[1].record, Record::Insert { rows, .. } if rows.len() == 2));
        assert!(matches!(&r[3].record, Record::Check { ordered: true, rows, .. } if rows == &["1"]));
        assert!(matches!(&r[4].record, Record::Check { rows, .. } if rows.is_empty()));
        assert!(matches!(&r[5].record, Record::Query { sql, .. } if sql == "SELECT 1"));
    }
}
