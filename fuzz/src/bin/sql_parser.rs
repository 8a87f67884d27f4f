//! Fuzz target: Sluice's statement parser (CREATE SOURCE / CREATE SINK /
//! DataFusion statements) must return statements or an error, never panic.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(sql) = std::str::from_utf8(data) {
            let _ = sluice_sql::parse_sql(sql);
        }
    });
}
