//! [`SluiceSession`]: the entry point. It owns a DataFusion `SessionContext`,
//! the connector registry, the declared sources and the running queries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use parking_lot::Mutex;
use tracing::warn;

use crate::checkpoint::{CheckpointLock, QueryCheckpoint, QueryMetadata};
use crate::clock::{ClockRef, SystemClock};
use crate::connector::{ConnectorRegistry, SinkContext, SourceContext, SourceDefinition};
use crate::error::{Result, SluiceError};
use crate::execution::{ExecutionParts, MicroBatchExecution, QuerySource, StateRuntime, WatermarkPolicy};
use crate::foreach::{ForeachBatchFn, ForeachBatchSink};
use crate::listener::{ListenerBus, ListenerHandle, StreamingQueryListener};
use crate::options::{Options, OutputMode, Trigger};
use crate::plan::IncrementalPlan;
use crate::query::StreamingQuery;
use crate::state::StateStoreConfig;
use crate::stream_table::{BatchReader, StreamTable};

/// Batches kept recoverable by default (Spark's `minBatchesToRetain`).
pub const DEFAULT_MIN_BATCHES_TO_RETAIN: u64 = 100;

/// Session-wide settings.
#[derive(Debug, Clone)]
pub struct SluiceConfig {
    /// Run each query's trigger loop in the background (`true`), or only
    /// when `process_all_available` is called (`false`, for tests).
    pub auto_trigger: bool,
    /// Where queries without a `checkpoint` option keep their checkpoint.
    pub checkpoint_root: PathBuf,
    /// DataFusion target partitions.
    pub target_partitions: usize,
    /// The most bytes one source may deliver in one micro-batch: a batch over
    /// it fails with an error naming the source, instead of memory growing
    /// without bound. Default 4 GiB.
    pub max_batch_bytes: usize,
}

/// Default of [`SluiceConfig::max_batch_bytes`].
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 30;

impl Default for SluiceConfig {
    fn default() -> Self {
        Self {
            auto_trigger: true,
            checkpoint_root: std::env::temp_dir().join("sluice-checkpoints"),
            target_partitions: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

/// Everything needed to start a query (built by `write_stream()` or `CREATE SINK`).
#[derive(Clone, Default)]
pub struct QuerySpec {
    /// Query name (also the memory sink's table name).
    pub name: Option<String>,
    /// Sink connector (`memory`, `console`, `files`, ...); ignored with `foreach`.
    pub format: String,
    /// Sink options.
    pub options: Options,
    /// Output mode.
    pub output_mode: OutputMode,
    /// Trigger.
    pub trigger: Trigger,
    /// Checkpoint location.
    pub checkpoint: Option<String>,
    /// Watermark policy across sources.
    pub watermark_policy: WatermarkPolicy,
    /// A `foreach_batch` function instead of a sink connector.
    pub foreach: Option<ForeachBatchFn>,
    /// Name of a memory table receiving the rows dropped as late.
    pub late_rows: Option<String>,
    /// How many recent batches stay recoverable (offset and commit logs,
    /// state versions); Spark's `minBatchesToRetain`. Default 100.
    pub min_batches_to_retain: Option<u64>,
    /// Checkpoint the stateful operators' state every this many batches
    /// instead of every batch (default 1). The offset and commit logs are
    /// still written every batch, so the sink stays exactly-once; a restart
    /// restores the last state checkpoint and replays the batches since
    /// from the sources (at most this many minus one) without sending them
    /// to the sink again. State that a batch creates and evicts between two
    /// checkpoints is never written. Needs replayable sources and
    /// operators that replay rebuilds (aggregations on live groups or
    /// panes, stream-stream joins).
    pub state_checkpoint_interval: Option<u64>,
    /// On restart, start stateful operators whose state layout changed with
    /// empty state (with a warning naming them) instead of failing; the
    /// unchanged ones keep their state.
    pub reset_changed_state: bool,
}

impl std::fmt::Debug for QuerySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuerySpec")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("options", &self.options)
            .field("output_mode", &self.output_mode)
            .field("trigger", &self.trigger)
            .finish()
    }
}

pub(crate) struct SessionInner {
    pub(crate) ctx: SessionContext,
    pub(crate) registry: ConnectorRegistry,
    pub(crate) clock: ClockRef,
    pub(crate) config: SluiceConfig,
    sources: Mutex<BTreeMap<String, SourceDefinition>>,
    queries: Mutex<BTreeMap<String, StreamingQuery>>,
    /// Where each query started here keeps its checkpoint (kept after it
    /// stops, for `sluice_state`).
    checkpoints: Arc<crate::functions::state_table::QueryCheckpoints>,
    counter: Mutex<u64>,
    listeners: Arc<ListenerBus>,
}

impl std::fmt::Debug for SessionInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SluiceSession").field("session_id", &self.ctx.session_id()).finish()
    }
}

/// A handle to the session, stored in the DataFusion session config so a
/// `DataFrame` can find its way back (`write_stream()`).
#[derive(Debug)]
pub(crate) struct SessionHandle(pub(crate) Weak<SessionInner>);

/// A Sluice session. Cheap to clone (shared).
///
/// ```no_run
/// # async fn demo() -> sluice_engine::Result<()> {
/// use sluice_engine::{SluiceSession, ConnectorRegistry};
/// let session = SluiceSession::new(ConnectorRegistry::new());
/// let df = session.context().sql("SELECT 1").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SluiceSession {
    inner: Arc<SessionInner>,
}

impl SluiceSession {
    /// A session with default settings and the wall clock.
    pub fn new(registry: ConnectorRegistry) -> Self {
        Self::with_config(registry, SluiceConfig::default(), Arc::new(SystemClock))
    }

    /// A session with explicit settings and clock.
    pub fn with_config(registry: ConnectorRegistry, config: SluiceConfig, clock: ClockRef) -> Self {
        let df_config = SessionConfig::new()
            .with_target_partitions(config.target_partitions.max(1))
            .with_information_schema(true)
            // Plans are built once and re-run per batch: no per-run dynamic filters.
            .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false);
        let ctx = crate::optimizer::with_case_literal_arms(SessionContext::new_with_config(df_config));
        for udf in crate::functions::window_udfs() {
            ctx.register_udf(udf);
        }
        // Spark's pattern letters (DataFusion's `date_format` takes chrono's).
        ctx.register_udf(crate::functions::date_format::to_char_udf());
        ctx.register_udf(crate::functions::split_part::split_part_udf());
        ctx.register_udf(crate::functions::date_format::date_format_udf());
        ctx.register_udf(crate::functions::proctime::ProcTime::udf(None));
        // External tables over a files-sink output read only its committed files.
        crate::committed_table::register(&ctx);
        let checkpoints = Arc::new(crate::functions::state_table::QueryCheckpoints::default());
        ctx.register_udtf(
            crate::functions::state_table::NAME,
            Arc::new(crate::functions::state_table::StateTableFunction::new(Arc::clone(&checkpoints))),
        );
        let inner = Arc::new_cyclic(|weak| {
            let ctx = ctx;
            ctx.state_ref().write().config_mut().set_extension(Arc::new(SessionHandle(weak.clone())));
            SessionInner {
                ctx,
                registry,
                clock,
                config,
                sources: Mutex::new(BTreeMap::new()),
                queries: Mutex::new(BTreeMap::new()),
                checkpoints,
                counter: Mutex::new(0),
                listeners: Arc::new(ListenerBus::default()),
            }
        });
        Self { inner }
    }

    /// Find the session a DataFrame belongs to.
    pub fn of_dataframe(df: &DataFrame) -> Result<Self> {
        let state = df.clone().into_parts().0;
        state
            .config()
            .get_extension::<SessionHandle>()
            .and_then(|h| h.0.upgrade())
            .map(|inner| Self { inner })
            .ok_or_else(|| SluiceError::plan("this DataFrame was not created by a Sluice session"))
    }

    /// The DataFusion context (static tables, UDFs, batch queries).
    pub fn context(&self) -> &SessionContext {
        &self.inner.ctx
    }

    /// The connector registry.
    pub fn registry(&self) -> &ConnectorRegistry {
        &self.inner.registry
    }

    /// Register a listener for the events of this session's queries
    /// (Spark's `streams.addListener`); see [`crate::listener`].
    pub fn add_listener(&self, listener: Arc<dyn StreamingQueryListener>) -> ListenerHandle {
        self.inner.listeners.add(listener)
    }

    /// Wait (at most `timeout`) until the listeners handled every event
    /// posted so far; `false` on timeout.
    pub fn wait_for_listeners(&self, timeout: std::time::Duration) -> bool {
        self.inner.listeners.wait_idle(timeout)
    }

    /// Unregister a listener.
    pub fn remove_listener(&self, handle: &ListenerHandle) {
        self.inner.listeners.remove(handle)
    }

    /// Serve the Prometheus metrics of this session's queries at
    /// `http://<address>/metrics` (`127.0.0.1:9464`; port 0 picks a free
    /// one) until the returned server is dropped. See [`crate::metrics`].
    pub async fn serve_metrics(&self, address: &str) -> Result<crate::metrics::MetricsServer> {
        let metrics = Arc::new(crate::metrics::SessionMetrics::new(Arc::clone(&self.inner.clock)));
        let server = crate::metrics::serve(address, Arc::clone(&metrics)).await?;
        self.add_listener(metrics);
        Ok(server)
    }

    /// The processing-time clock.
    pub fn clock(&self) -> &ClockRef {
        &self.inner.clock
    }

    /// Session settings.
    pub fn config(&self) -> &SluiceConfig {
        &self.inner.config
    }

    /// A fresh name with a prefix (`__stream_1`, `query_2`...).
    pub fn fresh_name(&self, prefix: &str) -> String {
        let mut c = self.inner.counter.lock();
        *c += 1;
        format!("{prefix}{c}")
    }

    /// Declare a source and register it as an unbounded table.
    pub fn create_source(&self, mut def: SourceDefinition) -> Result<()> {
        let factory = self.inner.registry.source(&def.connector)?;
        def.options.check_known("source", &def.connector, factory.valid_options())?;
        if def.schema.fields().is_empty() {
            def.schema = match factory.default_schema(&def.options) {
                Some(schema) => schema,
                None => {
                    // A connector that reads its schema from the data (a Delta
                    // table) says why it could not.
                    if let Some(e) = factory.schema_error(&def.options) {
                        return Err(e);
                    }
                    return Err(SluiceError::plan(format!(
                        "source '{}' ({} connector) needs a schema: list its columns in CREATE SOURCE or call \
                         .schema(..)",
                        def.name, def.connector
                    )));
                }
            };
        }
        if let Some(w) = &def.watermark {
            w.check(&def.name, &def.schema)?;
        }
        factory.validate(&def)?;
        let key = def.name.to_ascii_lowercase();
        if self.inner.sources.lock().contains_key(&key) || self.inner.ctx.table_exist(def.name.as_str())? {
            return Err(SluiceError::plan(format!("a table or source named '{}' already exists", def.name)));
        }
        let reader = BatchReader { factory, clock: Arc::clone(&self.inner.clock) };
        self.inner
            .ctx
            .register_table(def.name.as_str(), Arc::new(StreamTable::with_batch_reader(def.clone(), reader)))?;
        self.inner.sources.lock().insert(key, def);
        Ok(())
    }

    /// Declared sources.
    pub fn sources(&self) -> Vec<SourceDefinition> {
        self.inner.sources.lock().values().cloned().collect()
    }

    /// Start a streaming query for `df` as described by `spec`.
    pub async fn start_query(&self, df: DataFrame, spec: QuerySpec) -> Result<StreamingQuery> {
        let name = spec.name.clone().unwrap_or_else(|| self.fresh_name("query_"));
        if self.query(&name).is_some_and(|q| q.is_active()) {
            return Err(SluiceError::DuplicateQuery(name));
        }
        let (state, logical) = df.into_parts();
        if let Some(k) = spec.state_checkpoint_interval {
            if k == 0 || (k > 1 && matches!(spec.trigger, Trigger::Continuous(_))) {
                return Err(SluiceError::InvalidOption {
                    option: "state_checkpoint_interval".into(),
                    value: k.to_string(),
                    reason: "expected a number of batches, at least 1, and only with a micro-batch trigger (the \
                             continuous trigger checkpoints every epoch)"
                        .into(),
                });
            }
        }
        let retain = spec.min_batches_to_retain.unwrap_or(DEFAULT_MIN_BATCHES_TO_RETAIN).max(1);
        // A checkpoint that holds state keeps the number of state
        // partitions it was written with.
        let stored_partitions = match &spec.checkpoint {
            Some(location) => StateRuntime::stored_partitions(QueryCheckpoint::open(location)?.root()).await?,
            None => None,
        };
        let store_config = StateStoreConfig {
            num_partitions: stored_partitions.unwrap_or(self.inner.config.target_partitions).max(1),
            min_versions_to_retain: retain,
            ..Default::default()
        };
        let plan =
            Arc::new(IncrementalPlan::try_new(planning_state(state), logical, spec.output_mode, store_config).await?);
        // The sink connector and its options are checked before anything is
        // written to a checkpoint.
        let sink_factory = match &spec.foreach {
            Some(_) => {
                spec.options.check_known("sink", "foreach_batch", &[])?;
                None
            }
            None => {
                let factory = self.inner.registry.sink(&spec.format)?;
                spec.options.check_known("sink", &spec.format, factory.valid_options())?;
                if !factory.supports(spec.output_mode) {
                    let supported: Vec<String> = [OutputMode::Append, OutputMode::Update, OutputMode::Complete]
                        .into_iter()
                        .filter(|m| factory.supports(*m))
                        .map(|m| format!("'{m}'"))
                        .collect();
                    return Err(SluiceError::unsupported(format!(
                        "the {} sink does not support {} output mode; use output_mode = {}",
                        spec.format,
                        spec.output_mode,
                        supported.join(" or ")
                    )));
                }
                if spec.checkpoint.is_none() && factory.requires_checkpoint() {
                    return Err(SluiceError::InvalidOption {
                        option: "checkpoint".into(),
                        value: String::new(),
                        reason: format!(
                            "query '{name}': the {} sink needs a checkpoint location, so that a restart resumes \
                             where it stopped instead of starting again at batch 0; add checkpoint = '<dir>' to \
                             CREATE SINK ... WITH (...) (or .checkpoint(..) in the API)",
                            spec.format
                        ),
                    });
                }
                Some(factory)
            }
        };
        let checkpoint_location = match &spec.checkpoint {
            Some(c) => c.clone(),
            None => {
                let dir = self.inner.config.checkpoint_root.join(format!("{name}-{}", uuid::Uuid::new_v4()));
                warn!(query = %name, checkpoint = %dir.display(), "no checkpoint given: using a temporary one; the query cannot resume after a restart");
                dir.display().to_string()
            }
        };
        let checkpoint = QueryCheckpoint::open(&checkpoint_location)?;
        self.inner.checkpoints.insert(&name, checkpoint.root().location());
        let lock = CheckpointLock::acquire(checkpoint.root(), &name, self.inner.clock.now_millis()).await?;
        let query_id = checkpoint
            .metadata_or_init(QueryMetadata { id: uuid::Uuid::new_v4().to_string(), name: name.clone() })
            .await?
            .id;
        let (sink, sink_description) = match (&spec.foreach, sink_factory) {
            (Some(f), _) => (Arc::new(ForeachBatchSink::new(Arc::clone(f))) as _, "foreach_batch".to_string()),
            (None, None) => {
                return Err(SluiceError::plan("a query needs a sink connector or a foreach_batch function"))
            }
            (None, Some(factory)) => {
                let sink = factory.create(SinkContext {
                    name: name.clone(),
                    options: spec.options.clone(),
                    schema: plan.schema(),
                    output_mode: spec.output_mode,
                    context: self.inner.ctx.clone(),
                    checkpoint: checkpoint_location.clone(),
                    query_id: query_id.clone(),
                })?;
                (sink, spec.format.to_ascii_lowercase())
            }
        };
        let late_sink = match &spec.late_rows {
            None => None,
            Some(table) => {
                let schema = plan.late_rows_schema().ok_or_else(|| {
                    SluiceError::plan(format!(
                        "late_rows = '{table}': only a stateful query (aggregation or DISTINCT) with a watermark drops late rows"
                    ))
                })?;
                let factory = self.inner.registry.sink("memory")?;
                Some(factory.create(SinkContext {
                    name: table.clone(),
                    options: Options::new(),
                    schema,
                    output_mode: OutputMode::Append,
                    context: self.inner.ctx.clone(),
                    checkpoint: checkpoint_location.clone(),
                    query_id: query_id.clone(),
                })?)
            }
        };
        let mut sources = vec![];
        for (i, def) in plan.analysis().sources.iter().enumerate() {
            let factory = self.inner.registry.source(&def.connector)?;
            let source = factory.create(SourceContext {
                definition: def.clone(),
                metadata_path: format!("{}/sources/{i}", checkpoint.root().location()),
                clock: Arc::clone(&self.inner.clock),
            })?;
            if !source.replayable() {
                warn!(query = %name, source = %def.name, "source is not replayable: after a failure, rows may be lost (at-most-once)");
            }
            sources.push(QuerySource { name: def.name.clone(), source, watermark: def.watermark.clone() });
        }
        let mut exec = MicroBatchExecution::new(
            ExecutionParts {
                name: name.clone(),
                plan,
                sources,
                sink,
                sink_description,
                late_sink,
                checkpoint,
                clock: Arc::clone(&self.inner.clock),
                policy: spec.watermark_policy,
                min_batches_to_retain: retain,
                state_checkpoint_interval: spec.state_checkpoint_interval.unwrap_or(1),
                reset_changed_state: spec.reset_changed_state,
                max_batch_bytes: self.inner.config.max_batch_bytes,
                lock: Some(lock),
            },
            query_id,
        )?;
        if matches!(spec.trigger, Trigger::Continuous(_)) {
            exec.check_continuous()?;
        }
        exec.check_state_checkpoint_interval().await?;
        exec.recover().await?;
        if spec.trigger == Trigger::AvailableNow {
            // Fix what "available now" means at creation, so a source with
            // nothing to offer says so before the query starts.
            exec.prepare_for_available_now().await?;
        }
        let trigger = self.inner.config.auto_trigger.then_some(spec.trigger);
        let query =
            StreamingQuery::start(exec, trigger, Arc::clone(&self.inner.clock), Arc::clone(&self.inner.listeners));
        self.inner.queries.lock().insert(name.to_ascii_lowercase(), query.clone());
        Ok(query)
    }

    /// The incremental physical plan `df` would run as a streaming query
    /// in `mode` (`None`: the first of append, update and complete the query
    /// supports), as `EXPLAIN` shows it: the stateful nodes with their keys,
    /// state partitions and watermark rule. Nothing is started or written.
    pub async fn explain(&self, df: DataFrame, mode: Option<OutputMode>) -> Result<String> {
        let (plan, mode) = self.plan_for_explain(df, mode).await?;
        Ok(format!("output mode: {mode}\n{}", plan.explain()))
    }

    /// `EXPLAIN ANALYZE` of a streaming query: run `df` (in the first output
    /// mode it supports) over the data its sources hold now, in a temporary
    /// query whose output is discarded, and show the last micro-batch's
    /// plan with each node's output rows and time.
    pub async fn explain_analyze(&self, df: DataFrame) -> Result<String> {
        let (_, mode) = self.plan_for_explain(df.clone(), None).await?;
        let discard: ForeachBatchFn = Arc::new(|_, _| Ok(()));
        let spec = QuerySpec {
            name: Some(self.fresh_name("__explain_analyze_")),
            output_mode: mode,
            trigger: Trigger::Once,
            foreach: Some(discard),
            ..Default::default()
        };
        let query = self.start_query(df, spec).await?;
        let ran = query.process_all_available().await;
        let plan = query.last_batch_plan().await;
        let stopped = self.stop_query(query.name()).await;
        let batches = ran?;
        stopped?;
        let plan = plan.unwrap_or_else(|| "(no micro-batch ran: the sources hold no data)".into());
        Ok(format!("output mode: {mode}\nmicro-batches run: {}\n{plan}", batches.len()))
    }

    async fn plan_for_explain(&self, df: DataFrame, mode: Option<OutputMode>) -> Result<(IncrementalPlan, OutputMode)> {
        let (state, logical) = df.into_parts();
        let store_config =
            StateStoreConfig { num_partitions: self.inner.config.target_partitions.max(1), ..Default::default() };
        let modes = match mode {
            Some(m) => vec![m],
            None => vec![OutputMode::Append, OutputMode::Update, OutputMode::Complete],
        };
        let mut first_error = None;
        for m in modes {
            match IncrementalPlan::try_new(planning_state(state.clone()), logical.clone(), m, store_config).await {
                Ok(plan) => return Ok((plan, m)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| SluiceError::internal("no output mode to explain the query in")))
    }

    /// A query by name (running or terminated, until removed).
    pub fn query(&self, name: &str) -> Option<StreamingQuery> {
        self.inner.queries.lock().get(&name.to_ascii_lowercase()).cloned()
    }

    /// All queries started in this session, by name.
    pub fn queries(&self) -> Vec<StreamingQuery> {
        self.inner.queries.lock().values().cloned().collect()
    }

    /// Stop a query and forget it. Errors if there is none of that name.
    pub async fn stop_query(&self, name: &str) -> Result<()> {
        let q = self
            .inner
            .queries
            .lock()
            .remove(&name.to_ascii_lowercase())
            .ok_or_else(|| SluiceError::plan(format!("no query named '{name}'; SHOW QUERIES lists them")))?;
        q.stop().await
    }

    /// Stop every query.
    pub async fn stop_all(&self) -> Result<()> {
        let all: Vec<_> = std::mem::take(&mut *self.inner.queries.lock()).into_values().collect();
        for q in all {
            q.stop().await?;
        }
        Ok(())
    }
}

/// The state used to plan each batch: the session's, without the handle
/// back to the session (so a query does not keep its session alive).
fn planning_state(mut state: SessionState) -> SessionState {
    state.config_mut().set_extension(Arc::new(SessionHandle(Weak::new())));
    state
}
