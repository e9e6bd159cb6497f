//! Table columns computed the way the API server's printers compute them for workloads
//! (`kubectl get pods` shows READY 1/1, STATUS CrashLoopBackOff, RESTARTS 3 (5s ago)), where a
//! plain JSON path cannot.

use serde_json::{Value, json};

use crate::registry::ResourceInfo;

/// (header, type, priority): priority 1 columns show with `-o wide` only.
type Column = (&'static str, &'static str, u8);

/// Computed columns of one resource.
pub struct Printer {
    columns: &'static [Column],
    cells: fn(&Value) -> Vec<Value>,
}

const POD: &[Column] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Status", "string", 0),
    ("Restarts", "string", 0),
    ("Age", "string", 0),
    ("IP", "string", 1),
    ("Node", "string", 1),
    ("Nominated Node", "string", 1),
    ("Readiness Gates", "string", 1),
];
const DEPLOYMENT: &[Column] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Up-to-date", "integer", 0),
    ("Available", "integer", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];
const REPLICASET: &[Column] = &[
    ("Name", "string", 0),
    ("Desired", "integer", 0),
    ("Current", "integer", 0),
    ("Ready", "integer", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];
const STATEFULSET: &[Column] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
];
const JOB: &[Column] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Completions", "string", 0),
    ("Duration", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

static PRINTERS: [(&str, &str, Printer); 5] = [
    (
        "",
        "pods",
        Printer {
            columns: POD,
            cells: pod_cells,
        },
    ),
    (
        "apps",
        "deployments",
        Printer {
            columns: DEPLOYMENT,
            cells: deployment_cells,
        },
    ),
    (
        "apps",
        "replicasets",
        Printer {
            columns: REPLICASET,
            cells: replicaset_cells,
        },
    ),
    (
        "apps",
        "statefulsets",
        Printer {
            columns: STATEFULSET,
            cells: statefulset_cells,
        },
    ),
    (
        "batch",
        "jobs",
        Printer {
            columns: JOB,
            cells: job_cells,
        },
    ),
];

/// The computed printer of a resource, if it has one.
pub fn printer(info: &ResourceInfo) -> Option<&'static Printer> {
    PRINTERS
        .iter()
        .find(|(g, r, _)| *g == info.group && *r == info.resource)
        .map(|(_, _, p)| p)
}

impl Printer {
    /// `columnDefinitions` of the Table.
    pub fn column_definitions(&self) -> Value {
        Value::Array(
            self.columns
                .iter()
                .map(|(name, ty, priority)| {
                    let format = if *name == "Name" { "name" } else { "" };
                    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
                })
                .collect(),
        )
    }

    /// The cells of one row.
    pub fn cells(&self, obj: &Value) -> Vec<Value> {
        (self.cells)(obj)
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn since(ts: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
}

fn age(v: &Value) -> Value {
    json!(
        since(s(v, "/metadata/creationTimestamp"))
            .map(crate::table::human_age)
            .unwrap_or_else(|| "<unknown>".into())
    )
}

fn name(v: &Value) -> Value {
    json!(s(v, "/metadata/name"))
}

fn containers_images(v: &Value, spec: &str) -> (Value, Value) {
    let cs = v
        .pointer(spec)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

fn selector(v: &Value) -> Value {
    json!(crate::sim::util::selector_string(
        v.pointer("/spec/selector")
    ))
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut reason = s(pod, "/status/phase").to_string();
    if !s(pod, "/status/reason").is_empty() {
        reason = s(pod, "/status/reason").to_string();
    }
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart: Option<i64> = None;
    let mut running = false;
    for c in statuses.iter().rev() {
        restarts += n(c, "/restartCount");
        if let Some(t) = since(s(c, "/lastState/terminated/finishedAt")) {
            last_restart = Some(last_restart.map_or(t, |l: i64| l.min(t)));
        }
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if !terminated.is_empty() {
            reason = terminated.to_string();
        } else if c.pointer("/state/terminated").is_some() {
            reason = format!("ExitCode:{}", n(c, "/state/terminated/exitCode"));
        } else if c.get("ready") == Some(&json!(true)) && c.pointer("/state/running").is_some() {
            running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && running {
        reason = "Running".into();
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", crate::table::human_age(t)),
        _ => restarts.to_string(),
    };
    let or_none = |x: &str| {
        if x.is_empty() {
            "<none>".to_string()
        } else {
            x.to_string()
        }
    };
    vec![
        name(pod),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        age(pod),
        json!(or_none(s(pod, "/status/podIP"))),
        json!(or_none(s(pod, "/spec/nodeName"))),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn deployment_cells(d: &Value) -> Vec<Value> {
    let (c, i) = containers_images(d, "/spec/template/spec/containers");
    vec![
        name(d),
        json!(format!(
            "{}/{}",
            n(d, "/status/readyReplicas"),
            d.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        json!(n(d, "/status/updatedReplicas")),
        json!(n(d, "/status/availableReplicas")),
        age(d),
        c,
        i,
        selector(d),
    ]
}

fn replicaset_cells(rs: &Value) -> Vec<Value> {
    let (c, i) = containers_images(rs, "/spec/template/spec/containers");
    vec![
        name(rs),
        json!(
            rs.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        ),
        json!(n(rs, "/status/replicas")),
        json!(n(rs, "/status/readyReplicas")),
        age(rs),
        c,
        i,
        selector(rs),
    ]
}

fn statefulset_cells(sts: &Value) -> Vec<Value> {
    let (c, i) = containers_images(sts, "/spec/template/spec/containers");
    vec![
        name(sts),
        json!(format!(
            "{}/{}",
            n(sts, "/status/readyReplicas"),
            sts.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        age(sts),
        c,
        i,
    ]
}

fn job_cells(job: &Value) -> Vec<Value> {
    let (c, i) = containers_images(job, "/spec/template/spec/containers");
    let conds = job.pointer("/status/conditions");
    let is = |ty: &str| {
        crate::sim::util::condition(conds, ty)
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str)
            == Some("True")
    };
    let status = if is("Complete") {
        "Complete"
    } else if is("Failed") {
        "Failed"
    } else if is("Suspended") {
        "Suspended"
    } else if is("FailureTarget") {
        "FailureTarget"
    } else if is("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{}/{c}", n(job, "/status/succeeded")),
        None => format!(
            "{}/1 of {}",
            n(job, "/status/succeeded"),
            n(job, "/spec/parallelism").max(1)
        ),
    };
    let start = since(s(job, "/status/startTime"));
    let end = since(s(job, "/status/completionTime"));
    let duration = match (start, end) {
        (Some(a), Some(b)) => crate::table::human_age(a - b),
        (Some(a), None) => crate::table::human_age(a),
        _ => String::new(),
    };
    vec![
        name(job),
        json!(status),
        json!(completions),
        json!(duration),
        age(job),
        c,
        i,
        selector(job),
    ]
}
