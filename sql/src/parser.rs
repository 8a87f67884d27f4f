//! Sluice's statements, parsed by wrapping DataFusion's `DFParser` (which
//! wraps sqlparser): `CREATE SOURCE`, `CREATE SINK ... AS`, `DROP SINK`,
//! `SHOW QUERIES`. Every other statement is DataFusion's.

use std::collections::VecDeque;

use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{ColumnDef, Expr, Ident, ObjectName, Query, Value};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{Result, SqlError};

/// `CREATE SOURCE name (columns [, WATERMARK FOR col AS expr]) WITH (options)`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSource {
    /// Source name.
    pub name: String,
    /// Column definitions.
    pub columns: Vec<ColumnDef>,
    /// `WATERMARK FOR <column> AS <expr>`.
    pub watermark: Option<(Ident, Expr)>,
    /// `WITH (...)` options, keys lower-cased, values unquoted.
    pub options: Vec<(String, String)>,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
}

/// `CREATE SINK name WITH (options) AS query`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSink {
    /// Sink (and query) name.
    pub name: String,
    /// `WITH (...)` options.
    pub options: Vec<(String, String)>,
    /// The streaming query.
    pub query: Box<Query>,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SluiceStatement {
    /// `CREATE SOURCE`.
    CreateSource(CreateSource),
    /// `CREATE SINK ... AS`.
    CreateSink(CreateSink),
    /// `DROP SINK [IF EXISTS] name`.
    DropSink {
        /// Sink name.
        name: String,
        /// `IF EXISTS` given.
        if_exists: bool,
    },
    /// `SHOW QUERIES`.
    ShowQueries,
    /// `EXPLAIN [ANALYZE] <query name>`: the plan a running query runs
    /// each batch, or (ANALYZE) its last micro-batch with per-node metrics.
    ExplainQuery {
        /// The query (sink) name.
        name: String,
        /// `ANALYZE` given.
        analyze: bool,
    },
    /// Any DataFusion statement.
    DataFusion(Box<DFStatement>),
}

/// Parse one or more `;`-separated statements.
///
/// ```
/// use sluice_sql::parser::{parse_sql, SluiceStatement};
/// let stmts = parse_sql("CREATE SOURCE s (a INT) WITH (connector = 'memory'); SHOW QUERIES").unwrap();
/// assert!(matches!(stmts[0], SluiceStatement::CreateSource(_)));
/// assert!(matches!(stmts[1], SluiceStatement::ShowQueries));
/// ```
pub fn parse_sql(sql: &str) -> Result<Vec<SluiceStatement>> {
    let dialect = GenericDialect {};
    let mut df = DFParserBuilder::new(sql).with_dialect(&dialect).build()?;
    let mut out = vec![];
    loop {
        while df.parser.consume_token(&Token::SemiColon) {}
        if df.parser.peek_token() == Token::EOF {
            break;
        }
        let stmt = if is_word(&df.parser, 0, "CREATE") && is_word(&df.parser, 1, "SOURCE") {
            df.parser.next_token();
            df.parser.next_token();
            SluiceStatement::CreateSource(parse_create_source(&mut df.parser)?)
        } else if is_word(&df.parser, 0, "CREATE") && is_word(&df.parser, 1, "SINK") {
            df.parser.next_token();
            df.parser.next_token();
            SluiceStatement::CreateSink(parse_create_sink(&mut df.parser)?)
        } else if is_word(&df.parser, 0, "DROP") && is_word(&df.parser, 1, "SINK") {
            df.parser.next_token();
            df.parser.next_token();
            let if_exists = df.parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = object_name(&df.parser.parse_object_name(false)?);
            SluiceStatement::DropSink { name, if_exists }
        } else if let Some((name, analyze)) = explain_query_name(&df.parser) {
            let skip = if analyze { 3 } else { 2 };
            for _ in 0..skip {
                df.parser.next_token();
            }
            SluiceStatement::ExplainQuery { name, analyze }
        } else if is_word(&df.parser, 0, "SHOW") && is_word(&df.parser, 1, "QUERIES") {
            df.parser.next_token();
            df.parser.next_token();
            SluiceStatement::ShowQueries
        } else {
            SluiceStatement::DataFusion(Box::new(df.parse_statement().map_err(|e| match e.find_root() {
                datafusion::error::DataFusionError::SQL(p, _) => SqlError::Parse(p.to_string()),
                _ => SqlError::DataFusion(e),
            })?))
        };
        out.push(stmt);
        let next = df.parser.peek_token();
        if next != Token::EOF && next != Token::SemiColon {
            return Err(SqlError::Parse(format!("expected ';' or end of input, found {next}")));
        }
    }
    Ok(out)
}

/// Parse a whole script into statements, keeping DataFusion statements as a queue.
pub fn parse_one(sql: &str) -> Result<SluiceStatement> {
    let mut v: VecDeque<_> = parse_sql(sql)?.into();
    match (v.pop_front(), v.is_empty()) {
        (Some(s), true) => Ok(s),
        _ => Err(SqlError::Parse("expected exactly one statement".into())),
    }
}

/// `EXPLAIN [ANALYZE] <name>` followed by the end of the statement: a
/// running query's plan (DataFusion's EXPLAIN takes a statement, never a
/// bare name).
fn explain_query_name(p: &Parser) -> Option<(String, bool)> {
    if !is_word(p, 0, "EXPLAIN") {
        return None;
    }
    let analyze = is_word(p, 1, "ANALYZE");
    let at = if analyze { 2 } else { 1 };
    let Token::Word(w) = p.peek_nth_token(at).token else { return None };
    if w.keyword != Keyword::NoKeyword && w.quote_style.is_none() {
        return None;
    }
    matches!(p.peek_nth_token(at + 1).token, Token::EOF | Token::SemiColon).then(|| (w.value, analyze))
}

fn is_word(p: &Parser, n: usize, word: &str) -> bool {
    match p.peek_nth_token(n).token {
        Token::Word(w) => w.value.eq_ignore_ascii_case(word),
        _ => false,
    }
}

fn object_name(n: &ObjectName) -> String {
    n.0.iter().map(|p| p.to_string().trim_matches('"').to_string()).collect::<Vec<_>>().join(".")
}

fn parse_create_source(p: &mut Parser) -> Result<CreateSource> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&p.parse_object_name(false)?);
    let mut columns = vec![];
    let mut watermark = None;
    if p.consume_token(&Token::LParen) {
        loop {
            if p.consume_token(&Token::RParen) {
                break;
            }
            if is_word(p, 0, "WATERMARK") {
                p.next_token();
                p.expect_keyword(Keyword::FOR)?;
                let col = p.parse_identifier()?;
                p.expect_keyword(Keyword::AS)?;
                let expr = p.parse_expr()?;
                if watermark.replace((col, expr)).is_some() {
                    return Err(SqlError::Parse(format!("source '{name}' declares more than one WATERMARK")));
                }
            } else {
                columns.push(p.parse_column_def()?);
            }
            if !p.consume_token(&Token::Comma) {
                p.expect_token(&Token::RParen)?;
                break;
            }
        }
    }
    let options = parse_with_options(p)?;
    Ok(CreateSource { name, columns, watermark, options, if_not_exists })
}

fn parse_create_sink(p: &mut Parser) -> Result<CreateSink> {
    let name = object_name(&p.parse_object_name(false)?);
    let options = parse_with_options(p)?;
    p.expect_keyword(Keyword::AS)?;
    let query = p.parse_query()?;
    Ok(CreateSink { name, options, query })
}

fn parse_with_options(p: &mut Parser) -> Result<Vec<(String, String)>> {
    if !p.parse_keyword(Keyword::WITH) {
        return Ok(vec![]);
    }
    p.expect_token(&Token::LParen)?;
    let opts = p.parse_comma_separated(parse_option)?;
    p.expect_token(&Token::RParen)?;
    let mut out: Vec<(String, String)> = Vec::with_capacity(opts.len());
    for (key, value) in opts {
        // A repeated option would silently take one of its values: refuse it.
        if let Some((_, first)) = out.iter().find(|(k, _)| *k == key) {
            return Err(SqlError::Engine(sluice_engine::SluiceError::InvalidOption {
                option: key,
                value: value.clone(),
                reason: format!(
                    "the option is given twice in WITH (...) (first as '{first}', then as '{value}'); keep one"
                ),
            }));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// One `key = value` of WITH (...). A key is a name, a dotted name
/// (`kafka.security.protocol`, for options passed through to a client) or a
/// quoted string (`'kafka.security.protocol'`, as Flink writes them).
fn parse_option(p: &mut Parser) -> std::result::Result<(String, String), ParserError> {
    let key = match p.peek_token().token {
        Token::SingleQuotedString(s) => {
            p.next_token();
            s
        }
        _ => {
            let mut key = p.parse_identifier()?.value;
            while p.consume_token(&Token::Period) {
                key.push('.');
                key.push_str(&p.parse_identifier()?.value);
            }
            key
        }
    };
    p.expect_token(&Token::Eq)?;
    let value = p.parse_expr()?;
    Ok((key.to_ascii_lowercase(), option_value(&value)))
}

/// The text of an option value: strings unquoted, anything else as written.
fn option_value(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

impl From<ParserError> for SqlError {
    fn from(e: ParserError) -> Self {
        SqlError::Parse(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_source_with_watermark() {
        let s = parse_one(
            "CREATE SOURCE events (ts TIMESTAMP, word VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '10' MINUTE) \
             WITH (connector = 'memory', max_files_per_trigger = 2)",
        )
        .unwrap();
        let SluiceStatement::CreateSource(s) = s else { panic!("not a source") };
        assert_eq!(s.name, "events");
        assert_eq!(s.columns.len(), 2);
        assert_eq!(s.watermark.unwrap().0.value, "ts");
        assert_eq!(
            s.options,
            vec![("connector".into(), "memory".into()), ("max_files_per_trigger".into(), "2".into())]
        );
    }

    #[test]
    fn create_sink_and_passthrough() {
        let v = parse_sql(
            "CREATE SINK c WITH (connector='memory') AS SELECT a FROM s; CREATE TABLE t (a INT); DROP SINK IF EXISTS c",
        )
        .unwrap();
        assert!(matches!(&v[0], SluiceStatement::CreateSink(c) if c.name == "c"));
        assert!(matches!(&v[1], SluiceStatement::DataFusion(_)));
        assert!(matches!(&v[2], SluiceStatement::DropSink { if_exists: true, .. }));
    }

    #[test]
    fn repeated_option_is_refused() {
        let e = parse_sql("CREATE SOURCE s (a INT) WITH (connector = 'files', format = 'csv', FORMAT = 'json')")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'format'") && e.contains("twice") && e.contains("csv") && e.contains("json"), "{e}");
        let e =
            parse_sql("CREATE SINK k WITH (checkpoint = '/a', checkpoint = '/b') AS SELECT 1").unwrap_err().to_string();
        assert!(e.contains("'checkpoint'") && e.contains("twice"), "{e}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_sql("CREATE SOURCE (").is_err());
        assert!(parse_sql("CREATE SINK x AS").is_err());
    }
}
