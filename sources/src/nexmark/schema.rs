//! The person, auction and bid tables as Arrow.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use nexmark::event::Event;
use sluice_engine::{Result, SluiceError};

/// One of the three Nexmark tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// New users.
    Person,
    /// New auctions.
    Auction,
    /// Bids on auctions.
    Bid,
}

impl Table {
    /// Parse `person`, `auction` or `bid`.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "person" => Ok(Table::Person),
            "auction" => Ok(Table::Auction),
            "bid" => Ok(Table::Bid),
            other => Err(SluiceError::InvalidOption {
                option: "table".into(),
                value: other.into(),
                reason: "the nexmark tables are person, auction and bid".into(),
            }),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &'static str {
        match self {
            Table::Person => "person",
            Table::Auction => "auction",
            Table::Bid => "bid",
        }
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// The columns of a table.
pub fn schema_of(table: Table) -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    let t = |n: &str| Field::new(n, ts(), false);
    Arc::new(Schema::new(match table {
        Table::Person => vec![
            i("id"),
            s("name"),
            s("email_address"),
            s("credit_card"),
            s("city"),
            s("state"),
            t("date_time"),
            s("extra"),
        ],
        Table::Auction => vec![
            i("id"),
            s("item_name"),
            s("description"),
            i("initial_bid"),
            i("reserve"),
            t("date_time"),
            t("expires"),
            i("seller"),
            i("category"),
            s("extra"),
        ],
        Table::Bid => vec![i("auction"), i("bidder"), i("price"), s("channel"), s("url"), t("date_time"), s("extra")],
    }))
}

fn strings<'a>(v: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn ints(v: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}

fn times(v: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(v.map(|ms| ms as i64 * 1_000)))
}

/// The rows of `table` among `events`.
pub(super) fn to_batch(table: Table, events: &[Event]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = match table {
        Table::Person => {
            let p: Vec<_> =
                events.iter().filter_map(|e| if let Event::Person(p) = e { Some(p) } else { None }).collect();
            vec![
                ints(p.iter().map(|p| p.id as i64)),
                strings(p.iter().map(|p| p.name.as_str())),
                strings(p.iter().map(|p| p.email_address.as_str())),
                strings(p.iter().map(|p| p.credit_card.as_str())),
                strings(p.iter().map(|p| p.city.as_str())),
                strings(p.iter().map(|p| p.state.as_str())),
                times(p.iter().map(|p| p.date_time)),
                strings(p.iter().map(|p| p.extra.as_str())),
            ]
        }
        Table::Auction => {
            let a: Vec<_> =
                events.iter().filter_map(|e| if let Event::Auction(a) = e { Some(a) } else { None }).collect();
            vec![
                ints(a.iter().map(|a| a.id as i64)),
                strings(a.iter().map(|a| a.item_name.as_str())),
                strings(a.iter().map(|a| a.description.as_str())),
                ints(a.iter().map(|a| a.initial_bid as i64)),
                ints(a.iter().map(|a| a.reserve as i64)),
                times(a.iter().map(|a| a.date_time)),
                times(a.iter().map(|a| a.expires)),
                ints(a.iter().map(|a| a.seller as i64)),
                ints(a.iter().map(|a| a.category as i64)),
                strings(a.iter().map(|a| a.extra.as_str())),
            ]
        }
        Table::Bid => {
            let b: Vec<_> = events.iter().filter_map(|e| if let Event::Bid(b) = e { Some(b) } else { None }).collect();
            vec![
                ints(b.iter().map(|b| b.auction as i64)),
                ints(b.iter().map(|b| b.bidder as i64)),
                ints(b.iter().map(|b| b.price as i64)),
                strings(b.iter().map(|b| b.channel.as_str())),
                strings(b.iter().map(|b| b.url.as_str())),
                times(b.iter().map(|b| b.date_time)),
                strings(b.iter().map(|b| b.extra.as_str())),
            ]
        }
    };
    Ok(RecordBatch::try_new(schema_of(table), columns)?)
}
