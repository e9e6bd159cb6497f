//! Render benchmark: a small Helm chart and a Kustomize overlay, rendered cold (every run
//! renders) and answered from the manifest cache, measured side by side in one run.
//!
//! `cargo bench -p capstan-render --bench render` (set BENCH_ITERS to change the iterations).

use capstan_render::{
    HelmOptions, HelmParameter, RenderContext, Renderer, RendererConfig, SourceOptions,
};
use std::path::Path;
use std::time::{Duration, Instant};

fn measure(iters: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    f(); // warm-up: discovery, page cache, first library call
    let mut samples: Vec<Duration> = (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    let median = samples[samples.len() / 2];
    let p90 = samples[samples.len() * 9 / 10];
    (median, p90)
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:>8.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:>8.2} ms", d.as_secs_f64() * 1e3)
    }
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let renderer = Renderer::new(RendererConfig::default()).expect("renderer");
    println!("tools: {}", renderer.tool_versions());
    let ctx = RenderContext {
        app_name: "bench".into(),
        namespace: "default".into(),
        kube_version: Some("v1.32.0".into()),
        api_versions: vec![],
    };
    let helm = SourceOptions {
        path: "helm/web".into(),
        helm: Some(HelmOptions {
            value_files: vec!["envs/values-prod.yaml".into()],
            parameters: vec![HelmParameter {
                name: "image.tag".into(),
                value: "1.27".into(),
                force_string: false,
            }],
            ..HelmOptions::default()
        }),
        ..SourceOptions::default()
    };
    let kustomize = SourceOptions {
        path: "kustomize/overlays/prod".into(),
        ..SourceOptions::default()
    };
    println!(
        "{:<22} {:>11} {:>11} {:>11} {:>11} {:>10}",
        "case", "cold p50", "cold p90", "cached p50", "cached p90", "cold/hit"
    );
    for (name, opts) in [
        ("helm chart (web)", &helm),
        ("kustomize overlay", &kustomize),
    ] {
        let (cold, cold90) = measure(iters, || {
            let r = renderer.render(&tree, opts, &ctx, None).expect("render");
            assert!(!r.from_cache);
        });
        let key = format!("bench@{name}");
        renderer
            .render(&tree, opts, &ctx, Some(&key))
            .expect("render");
        let (hit, hit90) = measure(iters * 20, || {
            let r = renderer
                .render(&tree, opts, &ctx, Some(&key))
                .expect("render");
            assert!(r.from_cache);
        });
        println!(
            "{:<22} {} {} {} {} {:>9.0}x",
            name,
            fmt(cold),
            fmt(cold90),
            fmt(hit),
            fmt(hit90),
            cold.as_secs_f64() / hit.as_secs_f64()
        );
    }
}
