//! `meta.k8s.io/v1` Table output, which kubectl asks for on `get` (`Accept: …;as=Table`).

use serde_json::{Value, json};

use crate::registry::ResourceInfo;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .any(|p| p.contains("as=Table") && p.contains("g=meta.k8s.io"))
}

/// Kubernetes' short human durations ("45s", "3m12s", "5h", "12d").
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        let rem = s % 60;
        if rem == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rem}s")
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let rem = m % 60;
        if rem == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rem}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        let rem = h % 24;
        if rem == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rem}h")
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn age(obj: &Value) -> String {
    let Some(ts) = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
    else {
        return "<unknown>".into();
    };
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => human_age((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

fn cell(obj: &Value, path: &str) -> Value {
    let pointer = path.trim_start_matches('.').replace('.', "/");
    match obj.pointer(&format!("/{pointer}")) {
        None | Some(Value::Null) => json!("<none>"),
        Some(Value::String(s)) => json!(s),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.clone(),
        Some(other) => json!(other.to_string()),
    }
}

/// The column definitions of a resource's table.
pub fn columns(info: &ResourceInfo) -> Value {
    if let Some(p) = crate::sim::printers::printer(info) {
        return p.column_definitions();
    }
    let mut cols = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for (name, _) in &info.columns {
        cols.push(
            json!({"name": name, "type": "string", "format": "", "description": "", "priority": 0}),
        );
    }
    cols.push(json!({"name": "Age", "type": "string", "format": "",
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
        "priority": 0}));
    Value::Array(cols)
}

/// One table row for an object; with `full`, the row carries the whole object, otherwise its
/// metadata as a PartialObjectMetadata (what kubectl asks for by default).
pub fn row(info: &ResourceInfo, obj: &Value, full: bool) -> Value {
    let cells = match crate::sim::printers::printer(info) {
        Some(p) => p.cells(obj),
        None => {
            let name = obj.pointer("/metadata/name").cloned().unwrap_or(json!(""));
            let mut cells = vec![name];
            for (_, path) in &info.columns {
                cells.push(cell(obj, path));
            }
            cells.push(json!(age(obj)));
            cells
        }
    };
    let object = if full {
        obj.clone()
    } else {
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        })
    };
    json!({"cells": cells, "object": object})
}

/// A Table of objects.
pub fn table(
    info: &ResourceInfo,
    objs: &[Value],
    rv: Option<u64>,
    cont: Option<&str>,
    full: bool,
) -> Value {
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(info),
        "rows": objs.iter().map(|o| row(info, o, full)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(185), "3m5s");
        assert_eq!(human_age(3600), "60m");
        assert_eq!(human_age(5 * 3600 + 60), "5h1m");
        assert_eq!(human_age(3 * 86400), "3d");
    }
}
