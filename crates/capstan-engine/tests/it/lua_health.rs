//! Custom Lua health checks: layout and lookup, the script contract, overriding built-ins, the
//! sandbox and the per-evaluation limits.

use capstan_engine::health::{Health, HealthChecker, HealthStatus};
use capstan_engine::lua::{LuaError, LuaLimits, LuaScripts};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/health/lua")
        .join(dir)
}

fn inline(key: &str, source: &str) -> LuaScripts {
    LuaScripts::from_inline([(key.to_string(), source.to_string())]).expect("script loads")
}

/// Runs a one-off script for `example.com/Widget` on a small object.
fn run(source: &str) -> Health {
    let scripts = inline("example.com/Widget", source);
    let obj = widget();
    let script = scripts.lookup("example.com", "Widget").expect("found");
    scripts.evaluate(script, &obj)
}

fn widget() -> Value {
    json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default", "labels": {"tier": "web"}},
        "spec": {"size": 3, "owner": null},
        "status": {"phase": "Running", "replicas": [{"name": "a", "ready": true}, {"name": "b", "ready": false}]}
    })
}

fn assert_unknown_with(h: &Health, needle: &str) {
    assert_eq!(h.status, HealthStatus::Unknown, "{h:?}");
    let msg = h.message.as_deref().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}

fn message_of(scripts: &LuaScripts, group: &str, kind: &str) -> Option<String> {
    scripts.lookup(group, kind).map(|s| {
        scripts
            .evaluate(s, &json!({"kind": kind}))
            .message
            .unwrap_or_default()
    })
}

#[test]
fn lookup_precedence_exact_then_literal_kind_then_longest_group() {
    let scripts = LuaScripts::from_dir(&data("precedence")).expect("loads");
    assert_eq!(scripts.len(), 5);
    let m = |g, k| message_of(&scripts, g, k);
    assert_eq!(
        m("aws.crossplane.io", "Bucket").as_deref(),
        Some("exact aws.crossplane.io/Bucket")
    );
    // A literal kind beats a wildcard kind, even with a less specific group.
    assert_eq!(
        m("gcp.crossplane.io", "Bucket").as_deref(),
        Some("wildcard _/Bucket")
    );
    assert_eq!(
        m("aws.crossplane.io", "RDSInstance").as_deref(),
        Some("wildcard _.crossplane.io/_")
    );
    assert_eq!(
        m("a.b.crossplane.io", "Anything").as_deref(),
        Some("wildcard _.crossplane.io/_")
    );
    // `crossplane.io` itself does not end in `.crossplane.io`.
    assert_eq!(
        m("crossplane.io", "Provider").as_deref(),
        Some("wildcard _/_")
    );
    assert_eq!(m("apps", "Deployment").as_deref(), Some("wildcard _/_"));
    // The core group is the `core` directory; `_` as a group covers it too.
    assert_eq!(m("", "ConfigMap").as_deref(), Some("exact core/ConfigMap"));
    assert_eq!(m("", "Pod").as_deref(), Some("wildcard _/_"));
    assert_eq!(m("core", "ConfigMap").as_deref(), Some("wildcard _/_"));
}

#[test]
fn lookup_without_wildcards_misses_other_kinds() {
    let scripts = LuaScripts::from_inline([
        (
            "/Service".to_string(),
            "return {status='Healthy'}".to_string(),
        ),
        (
            "apps/Deployment".to_string(),
            "return {status='Healthy'}".to_string(),
        ),
    ])
    .unwrap();
    assert_eq!(
        scripts.lookup("", "Service").unwrap().origin(),
        "inline:/Service"
    );
    assert!(scripts.lookup("apps", "StatefulSet").is_none());
    assert!(scripts.lookup("extensions", "Deployment").is_none());
    assert!(scripts.lookup("", "Deployment").is_none());
}

#[test]
fn directory_scripts_see_the_object_and_override_builtins() {
    let scripts = LuaScripts::from_dir(&data("custom")).expect("loads");
    // README.md and testdata/ beside the scripts are not scripts.
    assert_eq!(scripts.len(), 2);
    let checker = HealthChecker::new().with_lua(scripts);

    let mut deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": "shop", "generation": 2,
                      "annotations": {"example.com/smoke-test": "failed"}},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                   "readyReplicas": 2, "availableReplicas": 2}
    });
    // The built-in rule alone says Healthy; the team's script knows better.
    assert_eq!(
        HealthChecker::new().assess(&deploy).unwrap().status,
        HealthStatus::Healthy
    );
    assert_eq!(
        checker.assess(&deploy).unwrap(),
        Health::new(HealthStatus::Degraded, "smoke test failed for shop")
    );
    deploy["metadata"]["annotations"]["example.com/smoke-test"] = "passed".into();
    assert_eq!(
        checker.assess(&deploy).unwrap(),
        Health::status(HealthStatus::Healthy)
    );
    // Kinds without a script keep their built-in check.
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": "data"}, "status": {"phase": "Lost"}});
    assert_eq!(checker.assess(&pvc).unwrap().status, HealthStatus::Degraded);
    // The ignore annotation beats a custom script too.
    deploy["metadata"]["annotations"]["argocd.argoproj.io/ignore-healthcheck"] = "true".into();
    assert_eq!(checker.assess(&deploy), None);

    let mut bucket = json!({
        "apiVersion": "s3.aws.crossplane.io/v1beta1", "kind": "Bucket",
        "metadata": {"name": "assets"},
        "spec": {"forProvider": {"locationConstraint": "eu-west-1"}},
        "status": {"atProvider": {"arn": null}, "conditions": [
            {"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": "2026-11-27T10:00:00Z"},
            {"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "lastTransitionTime": "2026-11-27T10:00:00Z"}
        ]}
    });
    assert_eq!(
        checker.assess(&bucket).unwrap(),
        Health::new(HealthStatus::Healthy, "Bucket is ready (2 conditions)")
    );
    bucket["status"]["conditions"][1] = json!({"type": "Synced", "status": "False",
        "reason": "ReconcileError",
        "message": "observe failed: cannot get bucket: AccessDenied: Access Denied"});
    assert_eq!(
        checker.assess(&bucket).unwrap(),
        Health::new(
            HealthStatus::Degraded,
            "observe failed: cannot get bucket: AccessDenied: Access Denied"
        )
    );
    // A custom kind nobody wrote a script for still has no health.
    let widget = widget();
    assert_eq!(checker.assess(&widget), None);
}

#[test]
fn object_conversion_follows_json_null_is_nil_and_arrays_are_one_based() {
    let h = run(r#"
        assert(obj.spec.owner == nil, "null must be nil")
        assert(#obj.status.replicas == 2, "array length")
        assert(obj.status.replicas[1].name == "a", "first element at index 1")
        assert(obj.status.replicas[0] == nil, "nothing at index 0")
        assert(obj.status.replicas[2].ready == false, "booleans")
        assert(obj.spec.size + 1 == 4, "numbers")
        local names = {}
        for _, r in ipairs(obj.status.replicas) do table.insert(names, r.name) end
        return {status = "Suspended", message = table.concat(names, ",")}
    "#);
    assert_eq!(h, Health::new(HealthStatus::Suspended, "a,b"));
}

#[test]
fn allowed_library_functions_work() {
    let h = run(r##"
        local t = os.time()
        local d = os.date("!%Y-%m-%dT%H:%M:%SZ", 0)
        local c = os.clock()
        local ok, err = pcall(function() error("inner") end)
        local ok2 = xpcall(function() return 1 end, function(e) return e end)
        local parts = {}
        for word in string.gmatch("a b c", "%a+") do parts[#parts + 1] = word:upper() end
        local mt = setmetatable({}, {__index = function() return 7 end})
        assert(type(t) == "number" and type(c) == "number")
        assert(d == "1970-01-01T00:00:00Z", d)
        assert(not ok and string.find(err, "inner"), tostring(err))
        assert(ok2)
        assert(mt.anything == 7 and getmetatable(mt) ~= nil)
        assert(math.floor(2.7) == 2 and tonumber("42") == 42 and select("#", 1, 2) == 2)
        assert(unpack({1, 2}) == 1 and next({}) == nil and rawget({x = 1}, "x") == 1)
        assert(_G.obj == obj and _VERSION == "Lua 5.1")
        return {status = "Healthy", message = table.concat(parts, "")}
    "##);
    assert_eq!(h, Health::new(HealthStatus::Healthy, "ABC"));
}

#[test]
fn sandbox_refuses_files_processes_and_loading_code() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capstan-lua-sandbox");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("escaped.txt");
    let _ = std::fs::remove_file(&target);
    let target_lua = target.display().to_string();
    // A file the escape attempts try to read or run.
    let payload = dir.join("payload.lua");
    std::fs::write(
        &payload,
        "return {status = 'Healthy', message = 'payload ran'}",
    )
    .unwrap();
    let payload_lua = payload.display().to_string();

    let attempts = [
        (format!("io.open({target_lua:?}, 'w'):write('x')"), "io"),
        (format!("os.execute('touch {target_lua}')"), "execute"),
        (format!("os.remove({payload_lua:?})"), "remove"),
        ("os.exit(1)".to_string(), "exit"),
        ("os.getenv('HOME')".to_string(), "getenv"),
        (format!("return dofile({payload_lua:?})"), "dofile"),
        (format!("return loadfile({payload_lua:?})()"), "loadfile"),
        (
            "return loadstring(\"return {status='Healthy'}\")()".to_string(),
            "loadstring",
        ),
        ("return load(function() return nil end)".to_string(), "load"),
        ("return require('os')".to_string(), "require"),
        ("return package.loaded.io".to_string(), "package"),
        ("return debug.getregistry()".to_string(), "debug"),
        ("return string.dump(function() end)".to_string(), "dump"),
        ("return ('x').dump(function() end)".to_string(), "dump"),
        ("return getfenv(0).io".to_string(), "getfenv"),
        ("setfenv(1, {})".to_string(), "setfenv"),
        ("collectgarbage('stop')".to_string(), "collectgarbage"),
        ("coroutine.create(function() end)".to_string(), "coroutine"),
        ("print('hello')".to_string(), "print"),
        (
            "return getmetatable(_G).__index.io.open".to_string(),
            "index",
        ),
    ];
    for (source, needle) in &attempts {
        let h = run(source);
        assert_unknown_with(&h, needle);
        assert!(
            h.message
                .as_deref()
                .unwrap()
                .contains("inline:example.com/Widget"),
            "the message names the script: {h:?}"
        );
    }
    assert!(!target.exists(), "a sandboxed script wrote a file");
    assert!(payload.exists(), "a sandboxed script removed a file");
}

#[test]
fn bytecode_is_refused_at_load_time() {
    let err = LuaScripts::from_inline([(
        "example.com/Widget".to_string(),
        "\x1bLua\x51\x00\x01\x04\x08\x04\x08\x00".to_string(),
    )])
    .unwrap_err();
    assert!(
        matches!(&err, LuaError::Syntax { origin, .. } if origin == "inline:example.com/Widget"),
        "{err}"
    );
}

#[test]
fn endless_loops_are_stopped_even_behind_pcall() {
    for source in [
        "while true do end",
        "local i = 0 repeat i = i + 1 until false",
        "local function f() return f() end return f()",
        "while true do pcall(function() while true do end end) end",
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
    ] {
        let h = run(source);
        assert_unknown_with(&h, "instruction limit exceeded");
    }
}

#[test]
fn memory_bombs_are_stopped_and_the_next_evaluation_is_clean() {
    let scripts = LuaScripts::from_inline([(
        "example.com/Widget".to_string(),
        r#"
            if obj.metadata.name == "bomb" then
              local t, s = {}, string.rep("x", 4096)
              for i = 1, 100000000 do t[i] = s .. i end
            elseif obj.metadata.name == "big-string" then
              local s = string.rep("x", 1024 * 1024 * 1024)
            elseif obj.metadata.name == "caught" then
              while true do pcall(function() local s = string.rep("y", 1024 * 1024 * 1024) end) end
            end
            return {status = "Healthy", message = "fine"}
            "#
        .to_string(),
    )])
    .unwrap()
    .with_limits(LuaLimits {
        memory: 8 << 20,
        time: std::time::Duration::from_millis(300),
        ..LuaLimits::default()
    });
    let script = scripts.lookup("example.com", "Widget").unwrap();
    let mut obj = widget();
    for name in ["bomb", "big-string"] {
        obj["metadata"]["name"] = name.into();
        assert_unknown_with(&scripts.evaluate(script, &obj), "memory limit exceeded");
        obj["metadata"]["name"] = "w1".into();
        assert_eq!(
            scripts.evaluate(script, &obj),
            Health::new(HealthStatus::Healthy, "fine")
        );
    }
    // A script that catches its memory errors still runs out of budget (here time: each
    // iteration is a few instructions but megabytes of copying).
    obj["metadata"]["name"] = "caught".into();
    assert_unknown_with(&scripts.evaluate(script, &obj), "limit exceeded");
}

#[test]
fn script_errors_and_bad_results_are_unknown() {
    assert_unknown_with(&run("error('custom failure')"), "custom failure");
    assert_unknown_with(&run("return obj.status.nothing.here"), "attempt to index");
    let h = run("local x = nil\nreturn x.y");
    assert_unknown_with(
        &h,
        "example.com/Widget/health.lua:2: attempt to index local 'x'",
    );
    assert_unknown_with(&run("return {status = 'Fine'}"), "\"Fine\"");
    assert_unknown_with(&run("return {status = 'healthy'}"), "\"healthy\"");
    assert_unknown_with(&run("return {message = 'no status'}"), "without status");
    assert_unknown_with(&run("return nil"), "returned nil");
    assert_unknown_with(&run("return 'Healthy'"), "returned string");
    assert_unknown_with(&run("return {status = 1}"), "status of type");
    // A script may report Unknown itself; that is not an error.
    assert_eq!(
        run("return {status = 'Unknown', message = 'cannot tell'}"),
        Health::new(HealthStatus::Unknown, "cannot tell")
    );
    assert_eq!(
        run("return {status = 'Missing', message = ''}"),
        Health::status(HealthStatus::Missing)
    );
}

#[test]
fn globals_do_not_leak_between_evaluations() {
    let scripts = inline(
        "example.com/Widget",
        r#"
        seen = (seen or 0) + 1
        string.capstan_marker = nil
        hs = {}
        hs.status = "Healthy"
        hs.message = tostring(seen)
        return hs
        "#,
    );
    let script = scripts.lookup("example.com", "Widget").unwrap();
    for _ in 0..3 {
        assert_eq!(
            scripts.evaluate(script, &widget()),
            Health::new(HealthStatus::Healthy, "1")
        );
    }
}

#[test]
fn load_errors_name_the_file_or_key() {
    let err = LuaScripts::from_dir(&data("broken")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LuaError::Syntax { .. }), "{text}");
    assert!(
        text.contains("broken/apps/Deployment/health.lua"),
        "names the file: {text}"
    );
    assert!(
        text.contains("apps/Deployment/health.lua:6: 'end' expected"),
        "says where and what is wrong: {text}"
    );

    let err = LuaScripts::from_dir(&data("does-not-exist")).unwrap_err();
    assert!(matches!(err, LuaError::Io { .. }), "{err}");
    assert!(err.to_string().contains("does-not-exist"), "{err}");

    for key in ["Deployment", "apps/", "apps/v1/Deployment"] {
        let err =
            LuaScripts::from_inline([(key.to_string(), "return {}".to_string())]).unwrap_err();
        assert!(matches!(err, LuaError::InvalidKey { .. }), "{key}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }

    let err = LuaScripts::from_inline([
        ("core/Pod".to_string(), "return {}".to_string()),
        ("/Pod".to_string(), "return {}".to_string()),
    ])
    .unwrap_err();
    assert!(matches!(err, LuaError::Duplicate { .. }), "{err}");
    assert!(err.to_string().contains("core/Pod"), "{err}");
}

#[test]
fn one_checker_serves_many_threads() {
    let scripts = LuaScripts::from_dir(&data("custom")).unwrap();
    let checker = HealthChecker::new().with_lua(scripts);
    let results: Vec<Vec<Health>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let checker = checker.clone();
                scope.spawn(move || {
                    (0..200)
                        .map(|i| {
                            let verdict = if (i + t) % 2 == 0 { "failed" } else { "passed" };
                            let d = json!({
                                "apiVersion": "apps/v1", "kind": "Deployment",
                                "metadata": {"name": format!("d{t}-{i}"),
                                             "annotations": {"example.com/smoke-test": verdict}},
                                "spec": {"replicas": 1},
                                "status": {"availableReplicas": 1}
                            });
                            checker.assess(&d).unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, healths) in results.iter().enumerate() {
        for (i, h) in healths.iter().enumerate() {
            if (i + t) % 2 == 0 {
                assert_eq!(
                    h,
                    &Health::new(
                        HealthStatus::Degraded,
                        format!("smoke test failed for d{t}-{i}")
                    )
                );
            } else {
                assert_eq!(h, &Health::status(HealthStatus::Healthy));
            }
        }
    }
}

#[test]
fn managed_fields_are_left_out_of_the_script_object() {
    let mut obj = widget();
    obj["metadata"]["managedFields"] = json!([{
        "manager": "capstan", "operation": "Apply", "apiVersion": "example.com/v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:size": {}}}
    }]);
    let scripts = inline(
        "example.com/Widget",
        r#"
        assert(obj.metadata.managedFields == nil, "managedFields present")
        return {status = "Healthy", message = obj.metadata.name .. "/" .. obj.metadata.labels.tier}
        "#,
    );
    let script = scripts.lookup("example.com", "Widget").unwrap();
    assert_eq!(
        scripts.evaluate(script, &obj),
        Health::new(HealthStatus::Healthy, "w1/web")
    );
}
