//! Manifest text to objects: multi-document YAML and JSON, `List` kinds expanded, errors with
//! file and line, and the stable output order.
//!
//! The renderer reads repository files through the crate-private parsers; [`parse_file`] is the
//! same reading for manifest files a person hands to the CLI (`capstan health`, `capstan diff`),
//! where every object is reported with the document (and `List` item) it came from.

use crate::RenderError;
use serde::Deserialize;
use serde_json::Value;

/// One object of a manifest file, with the place it was found (for messages about it).
#[derive(Debug, Clone, PartialEq)]
pub struct FileObject {
    /// The object, as JSON.
    pub object: Value,
    /// 1-based number of the YAML document (`---` separated) that holds it.
    pub document: usize,
    /// 1-based position in the `items` of a `List` document, when it came from one.
    pub item: Option<usize>,
}

impl FileObject {
    /// Where the object stands in its file: `document 2` or `document 1, item 3`.
    pub fn place(&self) -> String {
        match self.item {
            Some(item) => format!("document {}, item {item}", self.document),
            None => format!("document {}", self.document),
        }
    }
}

/// Parses the text of a manifest file (YAML or JSON, several `---` separated documents) into
/// its objects, in order: empty documents are skipped, the items of a `List` document (`kind:
/// List`, `ConfigMapList` … as `kubectl get -o yaml` prints) stand in for it, merge keys are
/// applied. `file` names the file in errors, which also name the document (and item) and, for
/// a syntax error, the line. Every document and item must be a mapping; which fields an object
/// needs is for the caller to judge.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<FileObject>, RenderError> {
    let not_a_mapping = |place: String| RenderError::Manifest {
        file: file.to_string(),
        message: format!("{place} is not a Kubernetes object (a mapping)"),
    };
    let documents = yaml_documents(text).map_err(|(document, err)| RenderError::Manifest {
        file: file.to_string(),
        // The parser's message carries the line and column.
        message: format!("document {document} is not valid YAML or JSON: {err}"),
    })?;
    let mut objects = Vec::new();
    for (index, doc) in documents.into_iter().enumerate() {
        let document = index + 1;
        let value = serde_json::to_value(&doc).map_err(|e| RenderError::Manifest {
            file: file.to_string(),
            message: format!("document {document} cannot be read as JSON: {e}"),
        })?;
        match value {
            Value::Null => {}
            Value::Object(mut map) if is_list(&map) => {
                let Some(Value::Array(items)) = map.remove("items") else {
                    unreachable!("is_list checked that items is an array");
                };
                for (i, object) in items.into_iter().enumerate() {
                    let found = FileObject {
                        object,
                        document,
                        item: Some(i + 1),
                    };
                    if !found.object.is_object() {
                        return Err(not_a_mapping(found.place()));
                    }
                    objects.push(found);
                }
            }
            object @ Value::Object(_) => objects.push(FileObject {
                object,
                document,
                item: None,
            }),
            _ => return Err(not_a_mapping(format!("document {document}"))),
        }
    }
    Ok(objects)
}

/// Splits a YAML stream into its documents with merge keys applied (`Null` for an empty
/// document). A syntax error gives the 1-based number of the failing document and the
/// parser's error (which knows the line).
fn yaml_documents(text: &str) -> Result<Vec<serde_yaml_ng::Value>, (usize, serde_yaml_ng::Error)> {
    let mut docs = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let parsed = serde_yaml_ng::Value::deserialize(document).and_then(|mut v| {
            // Kubernetes' YAML reader honours merge keys (`<<: *anchor`); so do we.
            v.apply_merge()?;
            Ok(v)
        });
        docs.push(parsed.map_err(|err| (index + 1, err))?);
    }
    Ok(docs)
}

/// How strictly a text must consist of Kubernetes objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// Tool output (Helm, Kustomize, Jsonnet): every document must be an object.
    Strict,
    /// A file found in a plain directory: a file none of whose documents is a Kubernetes object
    /// (a values file, a config file) is ignored, as Argo CD does; a file that mixes objects
    /// with non-objects, or that looks like a manifest but does not parse, is an error.
    Lenient,
}

/// Parses a YAML stream (JSON is YAML) into objects; `file` names it in errors.
pub(crate) fn parse_yaml(
    file: &str,
    text: &str,
    strictness: Strictness,
) -> Result<Vec<Value>, RenderError> {
    let docs = match yaml_documents(text) {
        Ok(docs) => docs,
        // A file that fails in its first document and does not look like a manifest is not one.
        Err((1, _)) if strictness == Strictness::Lenient && !looks_like_manifest(text) => {
            return Ok(Vec::new());
        }
        Err((_, err)) => {
            return Err(RenderError::Parse {
                file: file.to_string(),
                line: err.location().map(|l| l.line()),
                message: err.to_string(),
            });
        }
    };
    let mut objects = Vec::new();
    let mut non_objects = 0usize;
    for (index, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let value = serde_json::to_value(&doc).map_err(|e| RenderError::Parse {
            file: file.to_string(),
            line: None,
            message: format!("document {}: {e}", index + 1),
        })?;
        if is_object(&value) {
            objects.push(value);
        } else {
            non_objects += 1;
            if strictness == Strictness::Strict {
                return Err(RenderError::Manifest {
                    file: file.to_string(),
                    message: format!(
                        "document {} is not a Kubernetes object (apiVersion and kind are required)",
                        index + 1
                    ),
                });
            }
        }
    }
    if non_objects > 0 && !objects.is_empty() {
        return Err(RenderError::Manifest {
            file: file.to_string(),
            message: format!(
                "{non_objects} document(s) are not Kubernetes objects (apiVersion and kind are required) beside {} that are",
                objects.len()
            ),
        });
    }
    expand_lists(file, objects)
}

/// Parses a `.json` file of a plain directory: one object, a `List`, or an array of objects. A
/// JSON object that is not a Kubernetes object (a `package.json`) is ignored.
pub(crate) fn parse_json(file: &str, text: &str) -> Result<Vec<Value>, RenderError> {
    let value: Value = serde_json::from_str(text).map_err(|e| RenderError::Parse {
        file: file.to_string(),
        line: Some(e.line()),
        message: e.to_string(),
    })?;
    if value.is_object() && !is_object(&value) {
        return Ok(Vec::new());
    }
    flatten_value(file, value)
}

/// Flattens an evaluated value (Jsonnet output): an object, or arrays (nested) of objects.
pub(crate) fn flatten_value(file: &str, value: Value) -> Result<Vec<Value>, RenderError> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.into_iter().rev()),
            Value::Null => {}
            v if is_object(&v) => out.push(v),
            other => {
                return Err(RenderError::Manifest {
                    file: file.to_string(),
                    message: format!(
                        "expected Kubernetes objects (apiVersion and kind), found {}",
                        describe(&other)
                    ),
                });
            }
        }
    }
    expand_lists(file, out)
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object without apiVersion/kind",
    }
}

fn looks_like_manifest(text: &str) -> bool {
    text.contains("apiVersion:") && text.contains("kind:") && text.contains("metadata:")
}

fn is_object(v: &Value) -> bool {
    v.get("apiVersion").and_then(Value::as_str).is_some()
        && v.get("kind").and_then(Value::as_str).is_some()
}

/// A `List` document: a kind ending in `List` with an `items` array.
fn is_list(obj: &serde_json::Map<String, Value>) -> bool {
    obj.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && obj.get("items").is_some_and(Value::is_array)
}

/// Replaces `*List` objects (`kind: List`, `ConfigMapList` …) by their items, recursively.
fn expand_lists(file: &str, objects: Vec<Value>) -> Result<Vec<Value>, RenderError> {
    let mut out = Vec::with_capacity(objects.len());
    let mut stack: Vec<Value> = objects.into_iter().rev().collect();
    while let Some(obj) = stack.pop() {
        if !obj.as_object().is_some_and(is_list) {
            validate(file, &obj)?;
            out.push(obj);
            continue;
        }
        let Some(Value::Array(items)) = obj.get("items") else {
            continue;
        };
        for item in items.iter().rev() {
            if item.is_null() {
                continue;
            }
            if !is_object(item) {
                return Err(RenderError::Manifest {
                    file: file.to_string(),
                    message:
                        "a List item is not a Kubernetes object (apiVersion and kind are required)"
                            .into(),
                });
            }
            stack.push(item.clone());
        }
    }
    Ok(out)
}

fn validate(file: &str, obj: &Value) -> Result<(), RenderError> {
    let meta = obj.get("metadata");
    let named = meta
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !named {
        return Err(RenderError::Manifest {
            file: file.to_string(),
            message: format!(
                "{} {} has no metadata.name",
                obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                obj.get("kind").and_then(Value::as_str).unwrap_or("")
            ),
        });
    }
    Ok(())
}

/// The sort key of the output order: API group, kind, namespace, name. Objects equal on all
/// four keep the order the tool produced them in (the sort is stable).
fn sort_key(obj: &Value) -> (&str, &str, &str, &str) {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let group = match api_version.rsplit_once('/') {
        Some((group, _)) => group,
        None => "",
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let meta = obj.get("metadata");
    let field = |name: &str| {
        meta.and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let name = match field("name") {
        "" => field("generateName"),
        n => n,
    };
    (group, kind, field("namespace"), name)
}

/// Sorts objects deterministically by (group, kind, namespace, name).
pub(crate) fn sort_objects(objects: &mut [Value]) {
    objects.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_yaml_with_lists_and_merge_keys() {
        let text = "---\n# comment only\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n---\nbase: &b {app: x}\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  labels:\n    <<: *b\n";
        let objs = parse_yaml("f.yaml", text, Strictness::Strict).unwrap();
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[0]["metadata"]["name"], "a");
        assert_eq!(objs[1]["metadata"]["name"], "b");
        assert_eq!(objs[2]["metadata"]["labels"]["app"], "x");
    }

    #[test]
    fn yaml_error_names_file_and_line() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [b\n";
        let err = parse_yaml("dir/bad.yaml", text, Strictness::Lenient).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("dir/bad.yaml line "), "{msg}");
        match err {
            RenderError::Parse { line: Some(l), .. } => assert!((9..=10).contains(&l), "{l}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn lenient_mode_ignores_non_manifest_yaml_but_strict_refuses_it() {
        assert!(
            parse_yaml("values.yaml", "replicas: 3\n", Strictness::Lenient)
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_yaml("x.yaml", "a: [unclosed\n", Strictness::Lenient)
                .unwrap()
                .is_empty()
        );
        assert!(parse_yaml("values.yaml", "replicas: 3\n", Strictness::Strict).is_err());
    }

    #[test]
    fn parse_file_reports_each_object_with_its_document_and_item() {
        let text = "# comment only\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s}}\n- {kind: Pod}\n";
        // A comment before the first `---` is no document; the empty one between two `---` is.
        let objs = parse_file("app.yaml", text).unwrap();
        let places: Vec<String> = objs.iter().map(FileObject::place).collect();
        assert_eq!(
            places,
            ["document 1", "document 3, item 1", "document 3, item 2"]
        );
        assert_eq!(objs[1].object["kind"], "Secret");
        // Field requirements are the caller's: an item without apiVersion is still returned.
        assert_eq!(objs[2].object, json!({"kind": "Pod"}));
        let json = parse_file(
            "role.json",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}"#,
        )
        .unwrap();
        assert_eq!(json[0].object["metadata"]["name"], "c");
    }

    #[test]
    fn parse_file_errors_name_file_document_item_and_line() {
        let bad_yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: Pod\nmetadata:\n  name: x\n   labels: {}\n";
        let msg = parse_file("dir/bad.yaml", bad_yaml)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("dir/bad.yaml: document 2 is not valid YAML or JSON: "),
            "{msg}"
        );
        assert!(msg.contains("line 8"), "{msg}");

        let scalar = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\njust text\n";
        let msg = parse_file("s.yaml", scalar).unwrap_err().to_string();
        assert_eq!(
            msg,
            "s.yaml: document 2 is not a Kubernetes object (a mapping)"
        );

        let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- just a string\n";
        let msg = parse_file("l.yaml", list).unwrap_err().to_string();
        assert_eq!(
            msg,
            "l.yaml: document 1, item 2 is not a Kubernetes object (a mapping)"
        );
    }

    #[test]
    fn sort_is_by_group_kind_namespace_name() {
        let mut objs = vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "z"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "a"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "b"}}),
        ];
        sort_objects(&mut objs);
        let names: Vec<_> = objs
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["namespace"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            names,
            ["ConfigMap/", "Service/a", "Deployment/b", "Deployment/z"]
        );
    }
}
