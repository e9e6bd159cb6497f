//! Manifests as tests compare them: YAML streams parsed to JSON values, in Capstan's order.

use serde::Deserialize;
use serde_json::Value;

/// Parses a YAML stream (`---`-separated documents) into its non-empty documents.
///
/// # Panics
/// When a document is not YAML; the message names its position in the stream.
pub fn parse_stream(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, d)| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("YAML document {}: {e}", i + 1))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Sorts objects in the order Capstan documents for rendered manifests: by API group, kind,
/// namespace and name (`generateName` for an object without a name, as a Helm hook may be);
/// the sort is stable, so equal keys keep their order.
pub fn sorted(mut objects: Vec<Value>) -> Vec<Value> {
    fn key(o: &Value) -> (String, String, String, String) {
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        let api = o["apiVersion"].as_str().unwrap_or("");
        let group = api.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let meta = &o["metadata"];
        let name = match text(&meta["name"]) {
            n if n.is_empty() => text(&meta["generateName"]),
            n => n,
        };
        (
            group.to_string(),
            text(&o["kind"]),
            text(&meta["namespace"]),
            name,
        )
    }
    objects.sort_by_key(key);
    objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_documents_are_dropped_and_objects_sort_by_group_kind_namespace_name() {
        let objects = parse_stream(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: b}\n\
             ---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: z, namespace: a}\n\
             ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: y, namespace: a}\n\
             ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: a}\n\
             ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: zz-, namespace: a}\n",
        );
        assert_eq!(objects.len(), 5);
        let order: Vec<Value> = sorted(objects)
            .iter()
            .map(|o| {
                let m = &o["metadata"];
                json!([
                    o["kind"],
                    m["namespace"],
                    m.get("name").unwrap_or(&m["generateName"])
                ])
            })
            .collect();
        assert_eq!(
            order,
            vec![
                json!(["ConfigMap", "a", "y"]),
                json!(["ConfigMap", "a", "z"]),
                json!(["ConfigMap", "a", "zz-"]),
                json!(["Deployment", "a", "web"]),
                json!(["Deployment", "b", "web"]),
            ]
        );
    }

    #[test]
    #[should_panic(expected = "YAML document 2")]
    fn a_broken_document_is_named_by_its_position() {
        parse_stream("a: 1\n---\nb: [unclosed\n");
    }
}
