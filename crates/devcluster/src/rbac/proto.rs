//! Just enough of the Kubernetes protobuf encoding to read the two request bodies kubectl sends
//! that way to the virtual resources here: TokenRequest (`kubectl create token`) and
//! SelfSubjectAccessReview (`kubectl auth can-i`). Typed clients of client-go send built-in
//! types as `application/vnd.kubernetes.protobuf`; the answer may be JSON (they accept it).
//!
//! The envelope is the 4 bytes `k8s\0` followed by a `runtime.Unknown` message whose field 2
//! holds the object's own message. Field numbers are those of the Kubernetes `.proto` files.

use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// The content type of protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("malformed protobuf body: {what}"))
}

/// One field of a message: number and payload.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ApiError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(bad("varint too long"))
}

/// The fields of a message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ApiError> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wt) = (tag >> 3, tag & 7);
        let w = match wt {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| bad("length"))?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len());
                let end = end.ok_or_else(|| bad("truncated field"))?;
                let b = &buf[pos..end];
                pos = end;
                Wire::Bytes(b)
            }
            1 => {
                pos += 8;
                if pos > buf.len() {
                    return Err(bad("truncated fixed64"));
                }
                continue;
            }
            5 => {
                pos += 4;
                if pos > buf.len() {
                    return Err(bad("truncated fixed32"));
                }
                continue;
            }
            _ => return Err(bad("unsupported wire type")),
        };
        out.push((num, w));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("a string is not UTF-8"))
}

/// The object message inside the `k8s\0` envelope.
fn unwrap_envelope(body: &[u8]) -> Result<&[u8], ApiError> {
    let inner = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("missing the k8s envelope"))?;
    for (num, w) in fields(inner)? {
        if let (2, Wire::Bytes(raw)) = (num, w) {
            return Ok(raw);
        }
    }
    Err(bad("the envelope holds no object"))
}

/// Strings of a message by field number → JSON name.
fn strings_of(msg: &[u8], names: &[(u64, &str)]) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for (num, w) in fields(msg)? {
        if let (Some((_, name)), Wire::Bytes(b)) = (names.iter().find(|(n, _)| *n == num), w) {
            out.insert((*name).to_string(), json!(text(b)?));
        }
    }
    Ok(out)
}

/// A TokenRequest body as its JSON form (spec only; metadata is taken from the path).
pub fn token_request(body: &[u8]) -> Result<Value, ApiError> {
    let mut spec = Map::new();
    for (num, w) in fields(unwrap_envelope(body)?)? {
        let (2, Wire::Bytes(s)) = (num, w) else {
            continue;
        };
        let mut audiences = Vec::new();
        for (num, w) in fields(s)? {
            match (num, w) {
                (1, Wire::Bytes(b)) => audiences.push(json!(text(b)?)),
                (4, Wire::Varint(v)) => {
                    // int64 on the wire: two's complement in 64 bits.
                    spec.insert("expirationSeconds".into(), json!(v as i64));
                }
                (3, Wire::Bytes(b)) => {
                    let r = strings_of(
                        b,
                        &[(1, "kind"), (2, "apiVersion"), (3, "name"), (4, "uid")],
                    )?;
                    spec.insert("boundObjectRef".into(), Value::Object(r));
                }
                _ => {}
            }
        }
        if !audiences.is_empty() {
            spec.insert("audiences".into(), Value::Array(audiences));
        }
    }
    Ok(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}))
}

/// A SelfSubjectAccessReview body as its JSON form.
pub fn self_subject_access_review(body: &[u8]) -> Result<Value, ApiError> {
    let mut spec = Map::new();
    for (num, w) in fields(unwrap_envelope(body)?)? {
        let (2, Wire::Bytes(s)) = (num, w) else {
            continue;
        };
        for (num, w) in fields(s)? {
            match (num, w) {
                (1, Wire::Bytes(b)) => {
                    let ra = strings_of(
                        b,
                        &[
                            (1, "namespace"),
                            (2, "verb"),
                            (3, "group"),
                            (4, "version"),
                            (5, "resource"),
                            (6, "subresource"),
                            (7, "name"),
                        ],
                    )?;
                    spec.insert("resourceAttributes".into(), Value::Object(ra));
                }
                (2, Wire::Bytes(b)) => {
                    let na = strings_of(b, &[(1, "path"), (2, "verb")])?;
                    spec.insert("nonResourceAttributes".into(), Value::Object(na));
                }
                _ => {}
            }
        }
    }
    Ok(
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "metadata": {}, "spec": spec}),
    )
}

/// Decodes a request body of either encoding.
pub fn decode(
    content_type: &str,
    body: &[u8],
    from_proto: fn(&[u8]) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(CONTENT_TYPE) {
        from_proto(body)
    } else {
        crate::api::decode_body(body, essence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn envelope(obj: &[u8]) -> Vec<u8> {
        let mut out = b"k8s\0".to_vec();
        out.extend(field(2, obj));
        out
    }

    #[test]
    fn reads_a_token_request() {
        let mut spec = field(1, b"api");
        spec.extend([4 << 3, 0x90, 0x1c]); // expirationSeconds = 3600
        spec.extend(field(3, &[field(1, b"Pod"), field(3, b"p")].concat()));
        let body = envelope(&field(2, &spec));
        let v = token_request(&body).unwrap();
        assert_eq!(
            v["spec"],
            json!({"audiences": ["api"], "expirationSeconds": 3600,
                "boundObjectRef": {"kind": "Pod", "name": "p"}})
        );
        assert!(
            token_request(b"k8s\0\x12\x05ab").is_err(),
            "truncated input is an error"
        );
        assert!(token_request(b"{}").is_err());
    }

    #[test]
    fn reads_an_access_review() {
        let ra = [field(1, b"ns"), field(2, b"list"), field(5, b"pods")].concat();
        let body = envelope(&field(2, &field(1, &ra)));
        let v = self_subject_access_review(&body).unwrap();
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"namespace": "ns", "verb": "list", "resource": "pods"})
        );
    }
}
