//! The options of the `kafka` source: Spark's names in snake case, checked
//! once when the source is declared.

use std::time::Duration;

use rdkafka::ClientConfig;
use regex::Regex;
use sluice_engine::options::parse_duration_option;
use sluice_engine::{Options, Result, SluiceError};

use crate::files::{FileFormat, ParseMode};

/// Every option of the `kafka` source (`kafka.*` is passed to the client).
pub const SOURCE_OPTIONS: &[&str] = &[
    "bootstrap_servers",
    "topic",
    "topics",
    "topic_pattern",
    "assign",
    "starting_offsets",
    "starting_timestamp",
    "ending_offsets",
    "max_offsets_per_trigger",
    "min_offsets_per_trigger",
    "max_trigger_delay",
    "fail_on_data_loss",
    "group_id_prefix",
    "include_headers",
    "format",
    "mode",
    "poll_timeout_ms",
    "kafka.*",
];

/// Client settings that Sluice owns: the source assigns partitions and keeps
/// offsets in its checkpoint, so these cannot be passed through.
const OWNED_CLIENT_SETTINGS: &[(&str, &str)] = &[
    ("enable.auto.commit", "Sluice keeps the offsets in the query's checkpoint, not in the consumer group"),
    ("auto.offset.reset", "use starting_offsets (earliest, latest or JSON) instead"),
    ("enable.partition.eof", "the source needs partition end-of-file events to read exact ranges"),
    ("bootstrap.servers", "use bootstrap_servers"),
];

/// Which topics the source reads.
#[derive(Debug, Clone)]
pub enum Subscription {
    /// These topics (`topic` or `topics`).
    Topics(Vec<String>),
    /// Every topic whose name matches (`topic_pattern`).
    Pattern(Regex),
}

impl Subscription {
    /// Whether `topic` is subscribed.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Topics(t) => t.iter().any(|x| x == topic),
            Self::Pattern(r) => r.is_match(topic),
        }
    }
}

/// Which partitions of the subscribed topics this process reads (`assign`):
/// several processes can split a topic between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Every partition.
    All,
    /// These partition numbers (`assign = '0,2'`).
    List(Vec<i32>),
    /// Partitions `p` with `p % modulus == remainder` (`assign = 'mod 4 = 1'`).
    Modulo {
        /// The number of processes sharing the topic.
        modulus: i32,
        /// This process's share.
        remainder: i32,
    },
}

impl Assignment {
    /// Whether this process reads `partition`.
    pub fn contains(&self, partition: i32) -> bool {
        match self {
            Self::All => true,
            Self::List(l) => l.contains(&partition),
            Self::Modulo { modulus, remainder } => partition % modulus == *remainder,
        }
    }

    fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| SluiceError::InvalidOption {
            option: "assign".into(),
            value: text.into(),
            reason: format!(
                "{reason}; write a list of partition numbers ('0,2') or a share of them ('mod 4 = 1': the \
                 partitions whose number modulo 4 is 1)"
            ),
        };
        let t = text.trim().to_ascii_lowercase();
        if let Some(rest) = t.strip_prefix("mod") {
            let (m, r) = rest.split_once('=').ok_or_else(|| bad("expected 'mod N = R'"))?;
            let modulus: i32 = m.trim().parse().map_err(|_| bad("N is not a number"))?;
            let remainder: i32 = r.trim().parse().map_err(|_| bad("R is not a number"))?;
            if modulus < 1 || remainder < 0 || remainder >= modulus {
                return Err(bad("N must be at least 1 and R between 0 and N - 1"));
            }
            return Ok(Self::Modulo { modulus, remainder });
        }
        let list = t
            .split(',')
            .map(|p| p.trim().parse::<i32>().ok().filter(|p| *p >= 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("not a list of partition numbers"))?;
        if list.is_empty() {
            return Err(bad("no partition given"));
        }
        Ok(Self::List(list))
    }
}

/// Where a query's first batch starts (`starting_offsets`, `starting_timestamp`).
#[derive(Debug, Clone, PartialEq)]
pub enum StartingOffsets {
    /// The first offset still in each partition.
    Earliest,
    /// The end of each partition when the query first starts (Spark's default).
    Latest,
    /// Per topic and partition (`-2` earliest, `-1` latest).
    Specific(serde_json::Value),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// The parsed options of a `kafka` source.
#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    /// `bootstrap_servers`.
    pub bootstrap_servers: String,
    /// The topics read.
    pub subscription: Subscription,
    /// The partitions read.
    pub assignment: Assignment,
    /// Where the first batch starts.
    pub starting: StartingOffsets,
    /// Whether `starting_offsets` or `starting_timestamp` was given (a batch
    /// query starts at the earliest offsets otherwise).
    pub starting_given: bool,
    /// Where a batch query ends: `None` for the latest offsets, else JSON.
    pub ending: Option<serde_json::Value>,
    /// At most this many records per batch, over all partitions.
    pub max_offsets_per_trigger: Option<u64>,
    /// Wait for this many records before a batch...
    pub min_offsets_per_trigger: Option<u64>,
    /// ...but no longer than this.
    pub max_trigger_delay: Duration,
    /// Fail when records to read are gone (`fail_on_data_loss`).
    pub fail_on_data_loss: bool,
    /// Prefix of the consumer group ids.
    pub group_id_prefix: String,
    /// Add the `headers` column.
    pub include_headers: bool,
    /// Decode the value into the declared columns in this format.
    pub format: Option<FileFormat>,
    /// Malformed-value handling when decoding.
    pub mode: ParseMode,
    /// How long to wait for records the broker said exist.
    pub poll_timeout: Duration,
    /// `kafka.*` options, the prefix cut off.
    pub client: Vec<(String, String)>,
}

impl KafkaSourceOptions {
    /// Parse and check the options.
    pub fn parse(options: &Options) -> Result<Self> {
        let bootstrap_servers = bootstrap_servers(options)?;
        let subscription = subscription(options)?;
        let assignment = match options.get("assign") {
            Some(a) => Assignment::parse(a)?,
            None => Assignment::All,
        };
        let starting = match (options.get("starting_timestamp"), options.get("starting_offsets")) {
            (Some(_), Some(_)) => {
                return Err(SluiceError::InvalidOption {
                    option: "starting_timestamp".into(),
                    value: options.get("starting_timestamp").unwrap_or_default().into(),
                    reason: "give either starting_offsets or starting_timestamp, not both".into(),
                })
            }
            (Some(_), None) => StartingOffsets::Timestamp(
                options.parse::<i64>("starting_timestamp", "milliseconds since the epoch")?.unwrap_or_default(),
            ),
            (None, Some(s)) => parse_starting(s)?,
            (None, None) => StartingOffsets::Latest,
        };
        let ending = match options.get("ending_offsets").map(str::trim) {
            None => None,
            Some(e) if e.eq_ignore_ascii_case("latest") => None,
            Some(e) => Some(parse_json_offsets("ending_offsets", e)?),
        };
        let format = options.parse::<FileFormat>("format", "csv, json or text")?;
        if format == Some(FileFormat::Parquet) {
            return Err(SluiceError::InvalidOption {
                option: "format".into(),
                value: "parquet".into(),
                reason: "a Kafka message value is decoded as json, csv or text".into(),
            });
        }
        let mode = options.parse::<ParseMode>("mode", "permissive, dropmalformed or failfast")?.unwrap_or_default();
        let max_trigger_delay = match options.get("max_trigger_delay") {
            Some(d) => parse_duration_option("max_trigger_delay", d)?,
            None => Duration::from_secs(15 * 60),
        };
        let positive = |key: &str| -> Result<Option<u64>> {
            match options.parse::<u64>(key, "a positive number of records")? {
                Some(0) => Err(SluiceError::InvalidOption {
                    option: key.into(),
                    value: "0".into(),
                    reason: "expected a positive number of records".into(),
                }),
                v => Ok(v),
            }
        };
        let mut client = vec![];
        for (key, value) in options.with_prefix("kafka.") {
            if let Some((_, why)) = OWNED_CLIENT_SETTINGS.iter().find(|(k, _)| *k == key) {
                return Err(SluiceError::InvalidOption {
                    option: format!("kafka.{key}"),
                    value: value.into(),
                    reason: format!("the kafka source sets '{key}' itself: {why}"),
                });
            }
            client.push((key.to_string(), value.to_string()));
        }
        Ok(Self {
            bootstrap_servers,
            subscription,
            assignment,
            starting_given: options.get("starting_offsets").is_some() || options.get("starting_timestamp").is_some(),
            starting,
            ending,
            max_offsets_per_trigger: positive("max_offsets_per_trigger")?,
            min_offsets_per_trigger: positive("min_offsets_per_trigger")?,
            max_trigger_delay,
            fail_on_data_loss: options.bool("fail_on_data_loss", true)?,
            group_id_prefix: options.get("group_id_prefix").unwrap_or("sluice-kafka-source").to_string(),
            include_headers: options.bool("include_headers", false)?,
            format,
            mode,
            poll_timeout: Duration::from_millis(
                options.parse::<u64>("poll_timeout_ms", "milliseconds")?.unwrap_or(30_000).max(1),
            ),
            client,
        })
    }

    /// The consumer configuration: Sluice's settings, then the `kafka.*` ones.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "true")
            // A batch reads a range that exists: the broker need not wait
            // for more (its default 500 ms would be added to small batches).
            .set("fetch.wait.max.ms", "10")
            // Refill the fetch queue at once while a batch reads (librdkafka
            // otherwise waits 1 s once its queue threshold is reached).
            .set("fetch.queue.backoff.ms", "5")
            // Transactional producers' aborted records are never read, and a
            // batch never ends inside an open transaction.
            .set("isolation.level", "read_committed");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }
}

/// `bootstrap_servers`, required by the source and the sink.
pub fn bootstrap_servers(options: &Options) -> Result<String> {
    options.get("bootstrap_servers").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).ok_or_else(|| {
        SluiceError::InvalidOption {
            option: "bootstrap_servers".into(),
            value: String::new(),
            reason: "the kafka connector needs bootstrap_servers, the brokers to connect to (for example \
                     '127.0.0.1:9092')"
                .into(),
        }
    })
}

fn subscription(options: &Options) -> Result<Subscription> {
    let given: Vec<&str> =
        ["topic", "topics", "topic_pattern"].into_iter().filter(|k| options.get(k).is_some()).collect();
    if given.len() != 1 {
        return Err(SluiceError::InvalidOption {
            option: given.first().copied().unwrap_or("topic").into(),
            value: given.first().and_then(|k| options.get(k)).unwrap_or_default().into(),
            reason: format!(
                "the kafka source reads exactly one of topic, topics (a comma-separated list) or topic_pattern \
                 (a regular expression); {}",
                if given.is_empty() { "none was given".to_string() } else { format!("got {}", given.join(" and ")) }
            ),
        });
    }
    if let Some(p) = options.get("topic_pattern") {
        let regex = Regex::new(&format!("^(?:{p})$")).map_err(|e| SluiceError::InvalidOption {
            option: "topic_pattern".into(),
            value: p.into(),
            reason: format!("not a regular expression: {e}"),
        })?;
        return Ok(Subscription::Pattern(regex));
    }
    let key = given[0];
    let topics: Vec<String> = options
        .get(key)
        .unwrap_or_default()
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if topics.is_empty() || (key == "topic" && topics.len() > 1) {
        return Err(SluiceError::InvalidOption {
            option: key.into(),
            value: options.get(key).unwrap_or_default().into(),
            reason: "expected a topic name (use topics = 'a,b' for several)".into(),
        });
    }
    Ok(Subscription::Topics(topics))
}

fn parse_starting(text: &str) -> Result<StartingOffsets> {
    match text.trim().to_ascii_lowercase().as_str() {
        "earliest" => Ok(StartingOffsets::Earliest),
        "latest" => Ok(StartingOffsets::Latest),
        _ => Ok(StartingOffsets::Specific(parse_json_offsets("starting_offsets", text)?)),
    }
}

/// Per-partition offsets as Spark writes them: `{"topic":{"0":23,"1":-2}}`.
fn parse_json_offsets(option: &str, text: &str) -> Result<serde_json::Value> {
    let bad = |reason: String| SluiceError::InvalidOption {
        option: option.into(),
        value: text.into(),
        reason: format!(
            "{reason}; expected earliest, latest or JSON such as {{\"topic\":{{\"0\":23,\"1\":-2}}}} (-2 is the \
             earliest offset, -1 the latest)"
        ),
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let topics = value.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    for (topic, parts) in topics {
        let parts = parts.as_object().ok_or_else(|| bad(format!("topic '{topic}' does not map to an object")))?;
        for (p, o) in parts {
            if p.parse::<i32>().is_err() || o.as_i64().is_none_or(|o| o < -2) {
                return Err(bad(format!("topic '{topic}': partition '{p}' -> {o} is not a partition and an offset")));
            }
        }
    }
    Ok(value)
}
