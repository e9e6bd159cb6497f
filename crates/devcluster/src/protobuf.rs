//! Decoding of Kubernetes protobuf request bodies for the few kinds whose typed kubectl commands
//! send protobuf (`kubectl create namespace|configmap|secret|serviceaccount`). Responses are
//! always JSON (those clients accept it). Other kinds get a 415 naming what is supported.
//!
//! Wire format: the magic `k8s\0`, then a `runtime.Unknown` message (1: typeMeta {1: apiVersion,
//! 2: kind}, 2: raw object bytes, 3: contentEncoding, 4: contentType); the raw bytes are the
//! object's generated protobuf message, decoded here with a small per-kind field table.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// The Content-Type of Kubernetes protobuf.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Bytes,
    Time,
    MapStr,
    MapBytes,
    ListStr,
    Msg(&'static [Field]),
    ListMsg(&'static [Field]),
}

type Field = (u64, &'static str, Ty);

const OWNER_REF: &[Field] = &[
    (1, "kind", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
    (6, "controller", Ty::Bool),
    (7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    (1, "name", Ty::Str),
    (2, "generateName", Ty::Str),
    (3, "namespace", Ty::Str),
    (5, "uid", Ty::Str),
    (6, "resourceVersion", Ty::Str),
    (7, "generation", Ty::Int),
    (8, "creationTimestamp", Ty::Time),
    (11, "labels", Ty::MapStr),
    (12, "annotations", Ty::MapStr),
    (13, "ownerReferences", Ty::ListMsg(OWNER_REF)),
    (14, "finalizers", Ty::ListStr),
];

const NAMESPACE: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "spec", Ty::Msg(&[(1, "finalizers", Ty::ListStr)])),
    (3, "status", Ty::Msg(&[(1, "phase", Ty::Str)])),
];

const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::MapStr),
    (3, "binaryData", Ty::MapBytes),
    (4, "immutable", Ty::Bool),
];

const SECRET: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::MapBytes),
    (3, "type", Ty::Str),
    (4, "stringData", Ty::MapStr),
    (5, "immutable", Ty::Bool),
];

const LOCAL_REF: &[Field] = &[(1, "name", Ty::Str)];

const OBJECT_REF: &[Field] = &[
    (1, "kind", Ty::Str),
    (2, "namespace", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
];

const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "secrets", Ty::ListMsg(OBJECT_REF)),
    (3, "imagePullSecrets", Ty::ListMsg(LOCAL_REF)),
    (4, "automountServiceAccountToken", Ty::Bool),
];

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(format!("invalid protobuf body: {}", msg.into()))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| bad("truncated varint"))?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(bad("varint too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let len = usize::try_from(self.varint()?).map_err(|_| bad("length overflow"))?;
        let end = self.pos.checked_add(len).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| bad("truncated field"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Next (field number, wire type), or None at the end.
    fn key(&mut self) -> Result<Option<(u64, u64)>, ApiError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some((k >> 3, k & 7)))
    }

    fn skip(&mut self, wire: u64) -> Result<(), ApiError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            w => Err(bad(format!("unsupported wire type {w}"))),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), ApiError> {
        if self.pos + n > self.buf.len() {
            return Err(bad("truncated field"));
        }
        self.pos += n;
        Ok(())
    }
}

fn utf8(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("a string field is not UTF-8"))
}

fn map_entry(b: &[u8]) -> Result<(String, Vec<u8>), ApiError> {
    let mut r = Reader { buf: b, pos: 0 };
    let (mut k, mut v) = (String::new(), Vec::new());
    while let Some((num, wire)) = r.key()? {
        match (num, wire) {
            (1, 2) => k = utf8(r.bytes()?)?,
            (2, 2) => v = r.bytes()?.to_vec(),
            (_, w) => r.skip(w)?,
        }
    }
    Ok((k, v))
}

fn decode_message(b: &[u8], fields: &[Field]) -> Result<Value, ApiError> {
    let mut r = Reader { buf: b, pos: 0 };
    let mut out = Map::new();
    while let Some((num, wire)) = r.key()? {
        let Some((_, name, ty)) = fields.iter().find(|f| f.0 == num) else {
            // Fields this table does not know are skipped, as a server with an older schema
            // would drop them.
            r.skip(wire)?;
            continue;
        };
        let name = name.to_string();
        match *ty {
            // Go's generated code writes empty strings and zero numbers of non-pointer fields;
            // JSON omits them, and so does this decoder.
            Ty::Str => {
                let v = utf8(r.bytes()?)?;
                if !v.is_empty() {
                    out.insert(name, json!(v));
                }
            }
            Ty::Int => {
                let v = r.varint()? as i64;
                if v != 0 {
                    out.insert(name, json!(v));
                }
            }
            Ty::Bool => {
                out.insert(name, json!(r.varint()? != 0));
            }
            Ty::Bytes => {
                let v = base64::engine::general_purpose::STANDARD.encode(r.bytes()?);
                out.insert(name, json!(v));
            }
            Ty::Time => {
                let t = decode_message(r.bytes()?, &[(1, "s", Ty::Int)])?;
                let secs = t.get("s").and_then(Value::as_i64).unwrap_or(0);
                let ts = chrono::DateTime::from_timestamp(secs, 0)
                    .filter(|_| secs != 0)
                    .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                if let Some(ts) = ts {
                    out.insert(name, json!(ts));
                }
            }
            Ty::MapStr | Ty::MapBytes => {
                let (k, v) = map_entry(r.bytes()?)?;
                let v = if matches!(ty, Ty::MapStr) {
                    json!(utf8(&v)?)
                } else {
                    json!(base64::engine::general_purpose::STANDARD.encode(v))
                };
                let m = out.entry(name).or_insert_with(|| json!({}));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, v);
                }
            }
            Ty::ListStr => {
                let s = utf8(r.bytes()?)?;
                let l = out.entry(name).or_insert_with(|| json!([]));
                if let Some(l) = l.as_array_mut() {
                    l.push(json!(s));
                }
            }
            Ty::Msg(inner) => {
                out.insert(name, decode_message(r.bytes()?, inner)?);
            }
            Ty::ListMsg(inner) => {
                let v = decode_message(r.bytes()?, inner)?;
                let l = out.entry(name).or_insert_with(|| json!([]));
                if let Some(l) = l.as_array_mut() {
                    l.push(v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("missing the k8s protobuf prefix"))?;
    let unknown = decode_message(
        rest,
        &[
            (
                1,
                "typeMeta",
                Ty::Msg(&[(1, "apiVersion", Ty::Str), (2, "kind", Ty::Str)]),
            ),
            (2, "raw", Ty::Bytes),
        ],
    )?;
    let api_version = unknown
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = unknown
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let raw = unknown.get("raw").and_then(Value::as_str).unwrap_or("");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| bad("raw bytes"))?;
    let fields = match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        _ => {
            return Err(ApiError::unsupported_media_type(&format!(
                "{CONTENT_TYPE} for {api_version} {kind}; protobuf is accepted for v1 Namespace, ConfigMap, Secret and ServiceAccount only, send JSON (e.g. kubectl apply)"
            )));
        }
    };
    let mut obj = decode_message(&raw, fields)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, num: u8, bytes: &[u8]) {
        out.push((num << 3) | 2);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }

    #[test]
    fn decodes_a_configmap() {
        let mut meta = Vec::new();
        field(&mut meta, 1, b"cfg");
        field(&mut meta, 2, b"");
        field(&mut meta, 3, b"ns");
        let mut label = Vec::new();
        field(&mut label, 1, b"app");
        field(&mut label, 2, b"web");
        field(&mut meta, 11, &label);
        let mut cm = Vec::new();
        field(&mut cm, 1, &meta);
        let mut entry = Vec::new();
        field(&mut entry, 1, b"k");
        field(&mut entry, 2, b"v");
        field(&mut cm, 2, &entry);
        let mut tm = Vec::new();
        field(&mut tm, 1, b"v1");
        field(&mut tm, 2, b"ConfigMap");
        let mut body = b"k8s\0".to_vec();
        field(&mut body, 1, &tm);
        field(&mut body, 2, &cm);
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "cfg", "namespace": "ns", "labels": {"app": "web"}},
                   "data": {"k": "v"}, "apiVersion": "v1", "kind": "ConfigMap"})
        );
        assert!(decode(b"nope").is_err());
        assert!(decode(&body[..body.len() - 3]).is_err());
    }
}
