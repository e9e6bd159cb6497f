//! Custom health checks in sandboxed Lua 5.1, compatible with the scripts GitOps users keep.
//!
//! # Layout
//!
//! [`LuaScripts::from_dir`] reads `<dir>/<group>/<Kind>/health.lua` (anything else in the tree,
//! such as `actions/` or test fixtures, is ignored). [`LuaScripts::from_inline`] takes the same
//! scripts keyed `"<group>/<Kind>"`, for scripts kept in configuration.
//!
//! - The core group (Pod, Service, PersistentVolumeClaim, …) is spelled `core`, because an empty
//!   directory name cannot exist on disk: `core/Service/health.lua`. Inline keys may also leave it
//!   empty: `"/Service"`. No real API group is named `core` (it is Kubernetes' own name for the
//!   group without a name).
//! - `_` in a path segment is a wildcard for any run of characters: `_.crossplane.io/_` covers
//!   every kind of every group ending in `.crossplane.io`; `_` alone as the group matches any group,
//!   the core group included. API groups are DNS names and kinds are identifiers, so neither ever
//!   contains a literal `_`.
//!
//! # Precedence
//!
//! An exact `group/Kind` match wins. Otherwise, among the wildcard scripts that match, the one
//! with a literal kind wins over one with a wildcard kind, then the one whose group pattern has
//! more literal characters; remaining ties go to the lexicographically smaller pattern, so the
//! choice never depends on file system order.
//!
//! # Script contract
//!
//! The object is the global `obj` (objects become tables, arrays 1-based tables, `null` is `nil`);
//! the script returns `{status = "Healthy" | "Progressing" | "Degraded" | "Suspended" | "Missing" |
//! "Unknown", message = "…"}`. A script error, a missing or invalid status, or an exceeded limit
//! gives `Unknown` with the reason as message.
//!
//! # Sandbox
//!
//! Scripts see only: `assert error ipairs next pairs pcall xpcall rawequal rawget rawset select
//! setmetatable getmetatable tonumber tostring type unpack _VERSION _G`, the `string` library
//! without `string.dump`, `table`, `math`, and `os.time`, `os.date`, `os.clock`. There is no
//! `io`, `package`/`require`, `debug`, `coroutine`, `load*`/`dofile`, `getfenv`/`setfenv`,
//! `collectgarbage` or `print`. Chunks are loaded as text only (bytecode is refused). Every
//! evaluation runs in a fresh global table (globals a script sets do not leak into the next
//! object), under an instruction budget (enforced by a count hook; `pcall` cannot swallow the
//! limit), a wall-time budget checked at the same points, and a memory budget. Note that the
//! library tables themselves are shared by the evaluations of one Lua state: scripts are operator
//! configuration, not hostile tenants.
//!
//! Known limit of the budgets: they are checked between VM instructions, so a single library call
//! that runs long inside C cannot be interrupted. Memory-hungry calls (`string.rep`,
//! `table.concat`) are stopped by the memory budget; a pathological `string.find`/`match`/`gsub`
//! pattern (many `*`/`-` items backtracking over a long subject) is not, exactly as in Lua itself.
//!
//! # Concurrency and cost
//!
//! A Lua state is not `Sync`, so [`LuaScripts`] keeps a small pool of states; each compiles a
//! script the first time it runs it and keeps the compiled function, so an evaluation never
//! re-parses. A state that hit a limit is discarded rather than reused.

use crate::health::{Health, HealthStatus};
use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Table, VmState};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The file name of a health script inside `<group>/<Kind>/`.
pub const HEALTH_SCRIPT: &str = "health.lua";
/// How the core group is spelled in directory names and inline keys.
pub const CORE_GROUP_DIR: &str = "core";
/// The wildcard character of group and kind patterns.
pub const WILDCARD: char = '_';

/// The hook runs every this many VM instructions; the budget is checked at that granularity.
const HOOK_EVERY: u32 = 1000;
/// At most this many idle Lua states are kept for reuse.
const MAX_IDLE_STATES: usize = 8;

/// Errors loading health scripts. Evaluation never fails: its errors become `Unknown` health.
#[derive(Debug, thiserror::Error)]
pub enum LuaError {
    /// A directory or file of the script tree could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A path in the script tree that is not valid UTF-8 (group and kind names are ASCII).
    #[error("{path}: file name is not valid UTF-8")]
    NonUtf8Path {
        /// The offending path.
        path: PathBuf,
    },
    /// An inline key that is not `<group>/<Kind>`.
    #[error(
        "invalid health script key {key:?}: expected \"<group>/<Kind>\" (core group: \"core\" or empty)"
    )]
    InvalidKey {
        /// The key as given.
        key: String,
    },
    /// Two scripts for the same `group/Kind` pattern.
    #[error("two health scripts for {key}: {first} and {second}")]
    Duplicate {
        /// The normalized `group/Kind` pattern.
        key: String,
        /// Where the first one came from.
        first: String,
        /// Where the second one came from.
        second: String,
    },
    /// A script that does not compile.
    #[error("health script {origin} does not compile: {message}")]
    Syntax {
        /// The file path or inline key of the script.
        origin: String,
        /// Lua's message, with the line number.
        message: String,
    },
    /// The Lua runtime could not be set up (out of memory at start, …).
    #[error("cannot start the Lua runtime: {0}")]
    Runtime(String),
}

/// Per-evaluation budgets of a health script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LuaLimits {
    /// VM instructions one evaluation may execute (checked every 1000 instructions).
    pub instructions: u64,
    /// Bytes one evaluation may allocate on top of what the state already holds.
    pub memory: usize,
    /// Wall time one evaluation may take, checked with the instruction count. It only matters
    /// for scripts that spend their time inside library functions (a `pcall` loop around a huge
    /// `string.rep`), which few instructions can make very slow; it is a safety net, not a result:
    /// every script that stays within it gives the same answer on any machine.
    pub time: Duration,
}

impl Default for LuaLimits {
    /// Ten million instructions, 16 MiB and one second: real health scripts need a few hundred
    /// instructions, a few kilobytes and microseconds, so only runaway scripts meet these.
    fn default() -> Self {
        LuaLimits {
            instructions: 10_000_000,
            memory: 16 << 20,
            time: Duration::from_secs(1),
        }
    }
}

/// One health script and the `group/Kind` pattern it covers.
#[derive(Debug, Clone)]
pub struct Script {
    index: usize,
    group: String,
    kind: String,
    origin: String,
    source: String,
}

impl Script {
    /// The group pattern (`""` for the core group, `_` wildcards kept).
    pub fn group(&self) -> &str {
        &self.group
    }
    /// The kind pattern.
    pub fn kind(&self) -> &str {
        &self.kind
    }
    /// Where the script came from: its file path, or `inline:<key>`.
    pub fn origin(&self) -> &str {
        &self.origin
    }
    fn is_wildcard(&self) -> bool {
        self.group.contains(WILDCARD) || self.kind.contains(WILDCARD)
    }
}

/// A set of custom health scripts with their compiled-state pool. Cheap to clone (an `Arc`), and
/// `Send + Sync`: evaluations from many threads each borrow a Lua state from the pool.
#[derive(Clone)]
pub struct LuaScripts {
    inner: Arc<Inner>,
}

struct Inner {
    scripts: Vec<Script>,
    /// Exact scripts by group, then kind: looked up with borrowed strings, no allocation.
    exact: HashMap<String, HashMap<String, usize>>,
    /// Indices of wildcard scripts, best (most specific) first.
    wildcards: Vec<usize>,
    limits: LuaLimits,
    pool: Mutex<Vec<Runtime>>,
}

impl std::fmt::Debug for LuaScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaScripts")
            .field(
                "scripts",
                &self
                    .inner
                    .scripts
                    .iter()
                    .map(|s| s.origin.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("limits", &self.inner.limits)
            .finish()
    }
}

impl LuaScripts {
    /// Reads every `<dir>/<group>/<Kind>/health.lua` and compiles it once to report syntax
    /// errors now, with the file name, rather than on every assessment.
    pub fn from_dir(dir: &Path) -> Result<Self, LuaError> {
        let mut entries = Vec::new();
        for group_dir in sorted_subdirs(dir)? {
            for kind_dir in sorted_subdirs(&group_dir)? {
                let file = kind_dir.join(HEALTH_SCRIPT);
                if !file.is_file() {
                    continue;
                }
                let group = utf8_name(&group_dir)?;
                let kind = utf8_name(&kind_dir)?;
                let source = std::fs::read_to_string(&file).map_err(|source| LuaError::Io {
                    path: file.clone(),
                    source,
                })?;
                let group = if group == CORE_GROUP_DIR { "" } else { group };
                entries.push((
                    group.to_string(),
                    kind.to_string(),
                    file.display().to_string(),
                    source,
                ));
            }
        }
        Self::build(entries, LuaLimits::default())
    }

    /// Scripts given as `("<group>/<Kind>", source)` pairs; the group may be empty or `core` for
    /// the core group, and may use `_` wildcards like directory names.
    pub fn from_inline(
        entries: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, LuaError> {
        let mut parsed = Vec::new();
        for (key, source) in entries {
            let (group, kind) = key
                .split_once('/')
                .filter(|(g, k)| !k.is_empty() && !k.contains('/') && !g.contains('/'))
                .ok_or_else(|| LuaError::InvalidKey { key: key.clone() })?;
            let group = if group == CORE_GROUP_DIR { "" } else { group };
            parsed.push((
                group.to_string(),
                kind.to_string(),
                format!("inline:{key}"),
                source,
            ));
        }
        Self::build(parsed, LuaLimits::default())
    }

    /// The same scripts with other per-evaluation budgets.
    pub fn with_limits(self, limits: LuaLimits) -> Self {
        let inner = &self.inner;
        LuaScripts {
            inner: Arc::new(Inner {
                scripts: inner.scripts.clone(),
                exact: inner.exact.clone(),
                wildcards: inner.wildcards.clone(),
                limits,
                pool: Mutex::new(Vec::new()),
            }),
        }
    }

    fn build(
        entries: Vec<(String, String, String, String)>,
        limits: LuaLimits,
    ) -> Result<Self, LuaError> {
        let mut scripts: Vec<Script> = Vec::with_capacity(entries.len());
        let mut by_pattern: HashMap<(String, String), usize> = HashMap::new();
        for (index, (group, kind, origin, source)) in entries.into_iter().enumerate() {
            let pattern = (group.clone(), kind.clone());
            if let Some(&first) = by_pattern.get(&pattern) {
                return Err(LuaError::Duplicate {
                    key: format!("{}/{}", display_group(&group), kind),
                    first: scripts[first].origin.clone(),
                    second: origin,
                });
            }
            by_pattern.insert(pattern, index);
            scripts.push(Script {
                index,
                group,
                kind,
                origin,
                source,
            });
        }
        let mut exact: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for s in scripts.iter().filter(|s| !s.is_wildcard()) {
            exact
                .entry(s.group.clone())
                .or_default()
                .insert(s.kind.clone(), s.index);
        }
        let mut wildcards: Vec<usize> = scripts
            .iter()
            .filter(|s| s.is_wildcard())
            .map(|s| s.index)
            .collect();
        wildcards.sort_by(|&a, &b| {
            let (a, b) = (&scripts[a], &scripts[b]);
            let rank = |s: &Script| {
                (
                    !s.kind.contains(WILDCARD),
                    s.group.chars().filter(|&c| c != WILDCARD).count(),
                )
            };
            rank(b)
                .cmp(&rank(a))
                .then_with(|| (&a.group, &a.kind).cmp(&(&b.group, &b.kind)))
        });
        let inner = Inner {
            scripts,
            exact,
            wildcards,
            limits,
            pool: Mutex::new(Vec::new()),
        };
        // Compile everything once in a first state: syntax errors surface at load time, named,
        // and the state is kept for the first evaluations.
        let mut runtime = Runtime::new(&inner).map_err(|e| LuaError::Runtime(e.to_string()))?;
        for script in &inner.scripts {
            runtime
                .function(script)
                .map_err(|message| LuaError::Syntax {
                    origin: script.origin.clone(),
                    message,
                })?;
        }
        inner
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(runtime);
        Ok(LuaScripts {
            inner: Arc::new(inner),
        })
    }

    /// Number of scripts.
    pub fn len(&self) -> usize {
        self.inner.scripts.len()
    }

    /// True when there are no scripts.
    pub fn is_empty(&self) -> bool {
        self.inner.scripts.is_empty()
    }

    /// Every script, in load order.
    pub fn scripts(&self) -> &[Script] {
        &self.inner.scripts
    }

    /// The script that assesses objects of `group` (`""` for core) and `kind`, by the precedence
    /// described in the module documentation.
    pub fn lookup(&self, group: &str, kind: &str) -> Option<&Script> {
        let inner = &*self.inner;
        if let Some(&i) = inner.exact.get(group).and_then(|kinds| kinds.get(kind)) {
            return Some(&inner.scripts[i]);
        }
        inner
            .wildcards
            .iter()
            .map(|&i| &inner.scripts[i])
            .find(|s| glob_match(&s.group, group) && glob_match(&s.kind, kind))
    }

    /// Runs `script` on `obj`. Never fails: errors and exceeded limits give `Unknown` with the
    /// reason as message.
    pub fn evaluate(&self, script: &Script, obj: &Value) -> Health {
        let inner = &*self.inner;
        // A `Script` from another set would index the wrong function; treat it as a bug of the
        // caller but keep the process alive.
        if inner.scripts.get(script.index).map(|s| &s.origin) != Some(&script.origin) {
            return Health::new(
                HealthStatus::Unknown,
                format!(
                    "health script {} does not belong to this script set",
                    script.origin
                ),
            );
        }
        let pooled = inner.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut runtime = match pooled.map(Ok).unwrap_or_else(|| Runtime::new(inner)) {
            Ok(rt) => rt,
            Err(e) => {
                return Health::new(
                    HealthStatus::Unknown,
                    format!("cannot start the Lua runtime: {e}"),
                );
            }
        };
        let outcome = runtime.evaluate(script, obj, inner.limits);
        match outcome {
            Ok(health) => {
                let mut pool = inner.pool.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < MAX_IDLE_STATES {
                    pool.push(runtime);
                }
                health
            }
            // A state that failed may hold half-built data or sit at its memory limit; a fresh
            // one is cheap next to a misbehaving script.
            Err(message) => Health::new(
                HealthStatus::Unknown,
                format!("health script {}: {message}", script.origin),
            ),
        }
    }
}

fn display_group(group: &str) -> &str {
    if group.is_empty() {
        CORE_GROUP_DIR
    } else {
        group
    }
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>, LuaError> {
    let io = |source| LuaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn utf8_name(path: &Path) -> Result<&str, LuaError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| LuaError::NonUtf8Path {
            path: path.to_path_buf(),
        })
}

/// Matches `text` against `pattern`, where each `_` stands for any (possibly empty) run of
/// characters. Iterative with one backtrack point per wildcard, linear for the short names here.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == WILDCARD as u8 {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == WILDCARD as u8)
}

/// One sandboxed Lua state with the functions it has compiled so far.
struct Runtime {
    lua: Lua,
    /// Metatable of each evaluation's environment: `__index` is the sandbox's globals, and
    /// `__metatable` hides it from scripts.
    env_meta: Table,
    functions: Vec<Option<Function>>,
    /// Hook ticks (of [`HOOK_EVERY`] instructions) spent by the running evaluation.
    ticks: Arc<AtomicU64>,
    /// The running evaluation's deadline, in nanoseconds since `epoch`.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
}

impl Runtime {
    fn new(inner: &Inner) -> mlua::Result<Self> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::OS,
            LuaOptions::default(),
        )?;
        let globals = lua.globals();
        let base = lua.create_table()?;
        for name in [
            "assert",
            "error",
            "ipairs",
            "next",
            "pairs",
            "rawequal",
            "rawget",
            "rawset",
            "select",
            "setmetatable",
            "getmetatable",
            "tonumber",
            "tostring",
            "type",
            "unpack",
            "_VERSION",
        ] {
            base.raw_set(name, globals.raw_get::<mlua::Value>(name)?)?;
        }
        // The string table is also the strings' metatable `__index` (`("").dump`), so remove
        // dump from the real table, not from a copy.
        let string: Table = globals.raw_get("string")?;
        string.raw_set("dump", mlua::Value::Nil)?;
        base.raw_set("string", string)?;
        base.raw_set("table", globals.raw_get::<Table>("table")?)?;
        base.raw_set("math", globals.raw_get::<Table>("math")?)?;
        let os_full: Table = globals.raw_get("os")?;
        let os = lua.create_table()?;
        for name in ["time", "date", "clock"] {
            os.raw_set(name, os_full.raw_get::<mlua::Value>(name)?)?;
        }
        base.raw_set("os", os)?;

        let ticks = Arc::new(AtomicU64::new(0));
        let max_ticks = inner.limits.instructions.div_ceil(u64::from(HOOK_EVERY));
        let epoch = Instant::now();
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let budget = Budget {
            ticks: ticks.clone(),
            max_ticks,
            deadline: deadline.clone(),
            epoch,
            limits: inner.limits,
        };
        let hook_budget = budget.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| {
                hook_budget.ticks.fetch_add(1, Ordering::Relaxed);
                hook_budget.check()?;
                Ok(VmState::Continue)
            },
        )?;
        // pcall/xpcall would swallow the budget error and let a loop around them run forever;
        // the wrappers re-raise it once the budget is spent.
        let guard = lua.create_function(move |_, ()| budget.check())?;
        let wrap: Function = lua
            .load(
                r#"
local raw_pcall, raw_xpcall, guard = ...
local function finish(...) guard() return ... end
return function(f, ...) return finish(raw_pcall(f, ...)) end,
       function(f, handler) return finish(raw_xpcall(f, handler)) end
"#,
            )
            .set_name("=capstan-sandbox")
            .set_mode(ChunkMode::Text)
            .into_function()?;
        let (pcall, xpcall): (Function, Function) = wrap.call((
            globals.raw_get::<Function>("pcall")?,
            globals.raw_get::<Function>("xpcall")?,
            guard,
        ))?;
        base.raw_set("pcall", pcall)?;
        base.raw_set("xpcall", xpcall)?;

        let env_meta = lua.create_table()?;
        env_meta.raw_set("__index", base)?;
        env_meta.raw_set("__metatable", false)?;
        Ok(Runtime {
            lua,
            env_meta,
            functions: vec![None; inner.scripts.len()],
            ticks,
            deadline,
            epoch,
        })
    }

    /// The compiled function of `script`, compiling it on first use in this state.
    fn function(&mut self, script: &Script) -> Result<Function, String> {
        if let Some(f) = &self.functions[script.index] {
            return Ok(f.clone());
        }
        let f = self
            .lua
            .load(script.source.as_str())
            .set_name(format!(
                "={}/{}/{HEALTH_SCRIPT}",
                display_group(&script.group),
                script.kind
            ))
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| error_text(&e))?;
        self.functions[script.index] = Some(f.clone());
        Ok(f)
    }

    fn evaluate(
        &mut self,
        script: &Script,
        obj: &Value,
        limits: LuaLimits,
    ) -> Result<Health, String> {
        let f = self.function(script)?;
        let fail = |e: mlua::Error| error_text(&e);
        let env = self.lua.create_table().map_err(fail)?;
        env.set_metatable(Some(self.env_meta.clone()))
            .map_err(fail)?;
        env.raw_set("_G", env.clone()).map_err(fail)?;
        let lua_obj = object_to_lua(&self.lua, obj).map_err(fail)?;
        env.raw_set("obj", lua_obj).map_err(fail)?;
        f.set_environment(env).map_err(fail)?;

        let used = self.lua.used_memory();
        self.lua
            .set_memory_limit(used.saturating_add(limits.memory))
            .map_err(fail)?;
        self.ticks.store(0, Ordering::Relaxed);
        let deadline = self.epoch.elapsed().saturating_add(limits.time);
        self.deadline.store(
            u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let result = f.call::<mlua::Value>(());
        // The budget applies to the script only; reading its result must not trip it.
        let _ = self.lua.set_memory_limit(0);
        let result = result.map_err(|e| {
            if matches!(root_cause(&e), mlua::Error::MemoryError(_)) {
                format!("memory limit exceeded ({} bytes)", limits.memory)
            } else {
                error_text(&e)
            }
        })?;
        to_health(result)
    }
}

/// What the hook and the `pcall` guard check: once spent, the budget stays spent until the next
/// evaluation resets it, so every later check fails too.
#[derive(Clone)]
struct Budget {
    ticks: Arc<AtomicU64>,
    max_ticks: u64,
    deadline: Arc<AtomicU64>,
    epoch: Instant,
    limits: LuaLimits,
}

impl Budget {
    fn check(&self) -> mlua::Result<()> {
        if self.ticks.load(Ordering::Relaxed) > self.max_ticks {
            return Err(mlua::Error::runtime(format!(
                "instruction limit exceeded ({} instructions)",
                self.limits.instructions
            )));
        }
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if now > self.deadline.load(Ordering::Relaxed) {
            return Err(mlua::Error::runtime(format!(
                "time limit exceeded ({:?})",
                self.limits.time
            )));
        }
        Ok(())
    }
}

fn root_cause(e: &mlua::Error) -> &mlua::Error {
    let mut e = e;
    loop {
        match e {
            mlua::Error::CallbackError { cause, .. } => e = cause,
            mlua::Error::WithContext { cause, .. } => e = cause,
            _ => return e,
        }
    }
}

/// Lua's own message, without mlua's prefix and traceback: one line a person can act on.
fn error_text(e: &mlua::Error) -> String {
    let text = match root_cause(e) {
        mlua::Error::RuntimeError(msg) => msg.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(msg) => format!("out of memory: {msg}"),
        other => other.to_string(),
    };
    let text = text
        .split("\nstack traceback:")
        .next()
        .unwrap_or_default()
        .trim();
    text.to_string()
}

/// The object as scripts see it: everything except `metadata.managedFields`, which is server
/// bookkeeping no health rule reads and often the largest part of a live object (converting it
/// would dominate the cost of an evaluation).
fn object_to_lua(lua: &Lua, obj: &Value) -> mlua::Result<mlua::Value> {
    let Some(metadata) = obj.get("metadata").and_then(Value::as_object) else {
        return json_to_lua(lua, obj);
    };
    if !metadata.contains_key("managedFields") {
        return json_to_lua(lua, obj);
    }
    let Value::Object(map) = obj else {
        return json_to_lua(lua, obj);
    };
    let t = lua.create_table_with_capacity(0, map.len())?;
    for (k, item) in map {
        if k == "metadata" {
            let m = lua.create_table_with_capacity(0, metadata.len())?;
            for (mk, mv) in metadata.iter().filter(|(mk, _)| *mk != "managedFields") {
                m.raw_set(mk.as_str(), json_to_lua(lua, mv)?)?;
            }
            t.raw_set("metadata", m)?;
        } else {
            t.raw_set(k.as_str(), json_to_lua(lua, item)?)?;
        }
    }
    Ok(mlua::Value::Table(t))
}

/// Converts JSON to Lua the way scripts written for Argo CD expect: `null` becomes `nil`
/// (so `obj.status == nil` checks work), arrays become 1-based tables without a metatable.
fn json_to_lua(lua: &Lua, v: &Value) -> mlua::Result<mlua::Value> {
    Ok(match v {
        Value::Null => mlua::Value::Nil,
        Value::Bool(b) => mlua::Value::Boolean(*b),
        Value::Number(n) => mlua::Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => mlua::Value::String(lua.create_string(s)?),
        Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, json_to_lua(lua, item)?)?;
            }
            mlua::Value::Table(t)
        }
        Value::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k.as_str(), json_to_lua(lua, item)?)?;
            }
            mlua::Value::Table(t)
        }
    })
}

fn to_health(result: mlua::Value) -> Result<Health, String> {
    let mlua::Value::Table(t) = result else {
        return Err(format!(
            "returned {} instead of a table {{status=..., message=...}}",
            result.type_name()
        ));
    };
    let status = match t.raw_get::<mlua::Value>("status") {
        Ok(mlua::Value::String(s)) => s.to_string_lossy(),
        Ok(mlua::Value::Nil) => return Err("returned a table without status".to_string()),
        Ok(other) => return Err(format!("returned a status of type {}", other.type_name())),
        Err(e) => return Err(error_text(&e)),
    };
    let status: HealthStatus = status.parse().map_err(|e| format!("returned an {e}"))?;
    let message = match t.raw_get::<mlua::Value>("message") {
        Ok(mlua::Value::String(s)) => s.to_string_lossy(),
        Ok(mlua::Value::Number(n)) => n.to_string(),
        Ok(mlua::Value::Integer(n)) => n.to_string(),
        Ok(mlua::Value::Nil) => String::new(),
        Ok(other) => return Err(format!("returned a message of type {}", other.type_name())),
        Err(e) => return Err(error_text(&e)),
    };
    Ok(Health::new(status, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("_.crossplane.io", "aws.crossplane.io"));
        assert!(glob_match("_.crossplane.io", "a.b.crossplane.io"));
        assert!(!glob_match("_.crossplane.io", "crossplane.io"));
        assert!(!glob_match("_.crossplane.io", "crossplane.io.evil"));
        assert!(glob_match("_", ""));
        assert!(glob_match("_", "apps"));
        assert!(glob_match("apps", "apps"));
        assert!(!glob_match("apps", "apps2"));
        assert!(glob_match("_Policy", "NetworkPolicy"));
        assert!(!glob_match("_Policy", "Policies"));
        assert!(glob_match("a_b_c", "axxbyyc"));
        assert!(!glob_match("a_b_c", "axxbyy"));
    }

    #[test]
    fn scripts_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LuaScripts>();
        assert_send_sync::<crate::health::HealthChecker>();
    }
}
