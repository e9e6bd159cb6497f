//! docs/cli.md and docs/http-api.md are generated (`capstan docs cli|api`); they must say what the
//! binary does. Regenerate with `cargo run -p capstan -- docs cli > docs/cli.md` (and `api`).

use std::path::Path;
use std::process::Command;

fn generated(what: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["docs", what])
        .output()
        .expect("running capstan docs");
    assert!(
        out.status.success(),
        "capstan docs {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the reference is UTF-8")
}

fn committed(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn assert_same(what: &str, file: &str) {
    let want = generated(what);
    let have = committed(file);
    if want != have {
        let first = want
            .lines()
            .zip(have.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| want.lines().count().min(have.lines().count()));
        panic!(
            "docs/{file} is stale from line {} on: regenerate it with \
             `cargo run -p capstan -- docs {what} > docs/{file}`\n  generated: {:?}\n  committed: {:?}",
            first + 1,
            want.lines().nth(first),
            have.lines().nth(first)
        );
    }
}

#[test]
fn the_cli_reference_matches_the_binary() {
    assert_same("cli", "cli.md");
}

#[test]
fn the_http_api_reference_matches_the_server() {
    assert_same("api", "http-api.md");
}

#[test]
fn every_command_and_route_is_in_the_references() {
    let cli = generated("cli");
    for command in [
        "capstan up",
        "capstan app sync",
        "capstan app rollback",
        "capstan app unlock",
        "capstan app diff",
        "capstan repo add",
        "capstan install",
    ] {
        assert!(
            cli.contains(&format!("`{command}`")),
            "{command} is missing"
        );
    }
    let api = generated("api");
    for route in [
        "`GET /api/v1/applications`",
        "`POST /api/v1/applications/{namespace}/{name}/rollback`",
        "`POST /api/webhook`",
    ] {
        assert!(api.contains(route), "{route} is missing");
    }
}
