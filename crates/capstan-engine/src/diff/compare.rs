//! Comparison of a desired object with the live one, restricted to what the desired object says.
//!
//! The live object is *projected* onto the desired one: only the fields the desired object sets
//! are kept (so values the API server defaulted never count as drift), plus the fields our field
//! manager applied earlier that the desired object no longer has (removals). Where the two
//! values are equivalent (`1000m` and `1`, `80` and `"80"`, `{}` and absent) the projection
//! takes the desired spelling, so that the projected live object equals the desired one exactly
//! when there is no drift, and a textual diff of the two shows only real changes.

use super::fields::{FieldSet, canonical_scalar, restrict};
use serde_json::{Map, Value};

/// Projects `live` onto `desired`; returns the projection and whether they differ.
pub(crate) fn project(desired: &Value, live: &Value, owned: Option<&FieldSet>) -> (Value, bool) {
    let mut drift = false;
    let projected = project_value(desired, Some(live), owned, "", "", &mut drift)
        .unwrap_or_else(|| Value::Object(Map::new()));
    (projected, drift)
}

fn project_value(
    d: &Value,
    l: Option<&Value>,
    owned: Option<&FieldSet>,
    key: &str,
    parent: &str,
    drift: &mut bool,
) -> Option<Value> {
    let Some(l) = l else {
        if is_effectively_empty(d) {
            return Some(d.clone());
        }
        *drift = true;
        return None;
    };
    match (d, l) {
        (Value::Object(dm), Value::Object(lm)) => {
            let mut out = Map::with_capacity(dm.len());
            for (k, dv) in dm {
                let sub = owned.and_then(|o| o.field(k));
                if let Some(v) = project_value(dv, lm.get(k), sub, k, key, drift) {
                    out.insert(k.clone(), v);
                }
            }
            if let Some(o) = owned {
                for (name, sub) in &o.fields {
                    if dm.contains_key(name) {
                        continue;
                    }
                    // What is left of our fields once normalization dropped the ones that
                    // never count (tracking annotation, server metadata) may be nothing.
                    let removed = lm.get(name).map(|lv| restrict(lv, sub));
                    if let Some(removed) = removed.filter(|v| !is_effectively_empty(v)) {
                        *drift = true;
                        out.insert(name.clone(), removed);
                    }
                }
            }
            Some(Value::Object(out))
        }
        (Value::Array(da), Value::Array(la)) => {
            let out = match list_keys(key, da, owned) {
                Some(keys) => project_keyed(da, la, &keys, owned, key, drift),
                None => project_positional(da, la, key, parent, drift),
            };
            Some(Value::Array(out))
        }
        _ if scalars_equivalent(d, l, key, parent) => Some(d.clone()),
        _ if is_effectively_empty(d) && l.is_null() => Some(d.clone()),
        _ => {
            *drift = true;
            Some(l.clone())
        }
    }
}

fn project_keyed(
    da: &[Value],
    la: &[Value],
    keys: &[&str],
    owned: Option<&FieldSet>,
    key: &str,
    drift: &mut bool,
) -> Vec<Value> {
    let live_keys: Vec<Option<Vec<String>>> = la.iter().map(|it| item_key(it, keys)).collect();
    let mut matched = vec![false; la.len()];
    let mut out = Vec::with_capacity(da.len());
    for d in da {
        let dk = item_key(d, keys);
        let found =
            (0..la.len()).find(|&i| !matched[i] && live_keys[i].is_some() && live_keys[i] == dk);
        match found {
            Some(i) => {
                matched[i] = true;
                let sub = owned.and_then(|o| o.key_for(&la[i]));
                if let Some(v) = project_value(d, Some(&la[i]), sub, key, key, drift) {
                    out.push(v);
                }
            }
            None => *drift = true,
        }
    }
    if let Some(o) = owned {
        for (i, l) in la.iter().enumerate() {
            if matched[i] {
                continue;
            }
            if let Some(sub) = o.key_for(l) {
                *drift = true;
                out.push(restrict(l, sub));
            }
        }
    }
    out
}

fn project_positional(
    da: &[Value],
    la: &[Value],
    key: &str,
    parent: &str,
    drift: &mut bool,
) -> Vec<Value> {
    if da.len() != la.len() {
        *drift = true;
    }
    let mut out = Vec::with_capacity(la.len().max(da.len()));
    for (d, l) in da.iter().zip(la) {
        // Items of an atomic list carry no ownership of their own: the list is owned whole.
        if let Some(v) = project_value(d, Some(l), None, key, parent, drift) {
            out.push(v);
        }
    }
    out.extend(la.iter().skip(da.len()).cloned());
    out
}

/// The key fields of an associative list (Kubernetes' `patchMergeKey` / `listMapKeys`), from the
/// built-in table for the common fields, else from the keys our manager's field set uses.
fn list_keys<'a>(
    field: &str,
    desired: &[Value],
    owned: Option<&'a FieldSet>,
) -> Option<Vec<&'a str>> {
    let keys: Vec<&'a str> = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => vec!["name"],
        "volumeMounts" => vec!["mountPath"],
        "volumeDevices" => vec!["devicePath"],
        "hostAliases" => vec!["ip"],
        "conditions" => vec!["type"],
        "topologySpreadConstraints" => vec!["topologyKey", "whenUnsatisfiable"],
        "ports" => {
            let first = desired.first().and_then(Value::as_object)?;
            if first.contains_key("containerPort") {
                vec!["containerPort", "protocol"]
            } else if first.contains_key("port") {
                vec!["port", "protocol"]
            } else {
                return None;
            }
        }
        _ => {
            let (pairs, _) = owned?.keys.first()?;
            pairs.iter().map(|(k, _)| k.as_str()).collect()
        }
    };
    // Only when every desired item carries its key can items be matched by key.
    let all_keyed = desired.iter().all(|item| {
        item.as_object().is_some_and(|o| {
            keys.iter()
                .all(|k| o.contains_key(*k) || default_key(k).is_some())
        })
    });
    all_keyed.then_some(keys)
}

/// Key fields the API server defaults, so a desired item may leave them out.
fn default_key(field: &str) -> Option<&'static str> {
    (field == "protocol").then_some("TCP")
}

fn item_key(item: &Value, keys: &[&str]) -> Option<Vec<String>> {
    let obj = item.as_object()?;
    keys.iter()
        .map(|k| match obj.get(*k) {
            Some(v) => Some(canonical_scalar(v)),
            None => default_key(k).map(str::to_string),
        })
        .collect()
}

/// True for values that mean "nothing": null, `{}`, `[]`, and maps holding only such values.
pub(crate) fn is_effectively_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_effectively_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Keys whose values are Kubernetes quantities (the parent map's key) …
const QUANTITY_PARENTS: &[&str] = &[
    "requests",
    "limits",
    "hard",
    "capacity",
    "allocatable",
    "min",
    "max",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
    "overhead",
];
/// … or the key itself.
const QUANTITY_KEYS: &[&str] = &["sizeLimit", "storage"];

/// Equality up to the equivalences the API server applies: integers given as strings (typed
/// fields such as ports and int-or-string fields accept both, so no Kubernetes field holds both
/// spellings with different meanings), numbers of equal value, and quantities in quantity fields.
fn scalars_equivalent(d: &Value, l: &Value, key: &str, parent: &str) -> bool {
    if d == l {
        return true;
    }
    let numbers_equal = match (d, l) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            (n.is_i64() || n.is_u64()) && n.to_string() == *s
        }
        _ => false,
    };
    if numbers_equal {
        return true;
    }
    if !(QUANTITY_PARENTS.contains(&parent) || QUANTITY_KEYS.contains(&key)) {
        return false;
    }
    matches!((quantity_of(d), quantity_of(l)), (Some(a), Some(b)) if a == b)
}

fn quantity_of(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse_quantity(s.trim()),
        Value::Number(n) => parse_quantity(&n.to_string()),
        _ => None,
    }
}

/// Parses a Kubernetes quantity (`500m`, `1.5Gi`, `2e3`, `1E`) into nano-units, exactly.
/// Sub-nano fractions round up, as the API server does. `None` when it is not a quantity or does
/// not fit.
pub(crate) fn parse_quantity(s: &str) -> Option<i128> {
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return None;
    }
    if int_part.len() + frac_part.len() > 30 {
        return None;
    }
    let mut mantissa: i128 = 0;
    for c in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa * 10 + i128::from(c - b'0');
    }
    let mut exp10 = -(frac_part.len() as i32);
    let mut exp2 = 0u32;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            exp10 += exp.parse::<i32>().ok()?;
        }
    }
    let mut value = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    let e = exp10.checked_add(9)?;
    if e >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(e).ok()?)?)?;
    } else {
        let div = 10i128.checked_pow(u32::try_from(-e).ok()?)?;
        value = value / div + i128::from(value % div != 0);
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_compare_by_value() {
        let q = |s| parse_quantity(s).unwrap();
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert_ne!(q("1G"), q("1Gi"));
        assert_eq!(q("1E"), q("1000P"));
        assert!(parse_quantity("abc").is_none());
        assert!(parse_quantity("1.2.3").is_none());
        assert!(parse_quantity("").is_none());
        assert!(parse_quantity("1Xi").is_none());
    }

    #[test]
    fn quantity_equivalence_only_applies_to_quantity_fields() {
        assert!(scalars_equivalent(
            &json!("1000m"),
            &json!("1"),
            "cpu",
            "requests"
        ));
        assert!(scalars_equivalent(&json!(1), &json!("1"), "cpu", "limits"));
        assert!(!scalars_equivalent(
            &json!("1000m"),
            &json!("1"),
            "value",
            "env"
        ));
        assert!(scalars_equivalent(
            &json!(80),
            &json!("80"),
            "targetPort",
            "spec"
        ));
        assert!(!scalars_equivalent(
            &json!("25%"),
            &json!(25),
            "maxSurge",
            "rollingUpdate"
        ));
    }

    #[test]
    fn projection_ignores_defaults_and_keeps_desired_spelling() {
        let desired = json!({"spec": {"ports": [{"port": 80, "targetPort": "8080"}]}});
        let live = json!({"spec": {"clusterIP": "10.0.0.1",
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}});
        let (projected, drift) = project(&desired, &live, None);
        assert!(!drift);
        assert_eq!(projected, desired);
    }
}
