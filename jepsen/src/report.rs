//! The report in `--out`: `results.json`, a terminal summary, and two SVG
//! plots (latency scatter; throughput over time), fault windows shaded.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use crate::checkers::{CheckResult, RunData, Validity};
use crate::history::{F, Kind, NEMESIS_PROCESS};

/// The overall verdict: invalid if any checker is, unknown if any is
/// unknown or no fault ever took effect, valid otherwise.
pub fn verdict(results: &[CheckResult], faults_installed: usize, faults_wanted: bool) -> Validity {
    if results.iter().any(|r| r.valid == Validity::Invalid) {
        Validity::Invalid
    } else if results.iter().any(|r| r.valid == Validity::Unknown)
        || (faults_wanted && faults_installed == 0)
    {
        Validity::Unknown
    } else {
        Validity::Valid
    }
}

pub fn write_results(
    out: &Path,
    run: serde_json::Value,
    d: &RunData,
    results: &[CheckResult],
    verdict: Validity,
) -> anyhow::Result<()> {
    let nemesis: Vec<_> = d
        .events
        .iter()
        .filter(|e| e.process == NEMESIS_PROCESS)
        .map(|e| json!({"time_ms": e.time_ns / 1_000_000, "event": e.value}))
        .collect();
    let count = |f: F, k: Kind| d.ops.iter().filter(|o| o.f == f && o.kind == k).count();
    let ops: serde_json::Map<String, serde_json::Value> = [F::Authorize, F::Publish, F::Activate, F::ReadPolicy]
        .into_iter()
        .map(|f| {
            (
                format!("{f:?}").to_lowercase(),
                json!({"ok": count(f, Kind::Ok), "fail": count(f, Kind::Fail), "info": count(f, Kind::Info)}),
            )
        })
        .collect();
    let doc = json!({
        "valid": verdict,
        "run": run,
        "operations": ops,
        "checkers": results,
        "nemesis": nemesis,
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&doc)?,
    )?;
    Ok(())
}

pub fn print_summary(results: &[CheckResult], verdict: Validity, d: &RunData, out: &Path) {
    let ok = d.ops.iter().filter(|o| o.kind == Kind::Ok).count();
    let fail = d.ops.iter().filter(|o| o.kind == Kind::Fail).count();
    let info = d.ops.iter().filter(|o| o.kind == Kind::Info).count();
    let faults = d
        .events
        .iter()
        .filter(|e| e.process == NEMESIS_PROCESS && e.value["action"] == "installed")
        .count();
    println!("operations: {ok} ok, {fail} fail, {info} info; faults installed: {faults}");
    for r in results {
        let v = match r.valid {
            Validity::Valid => "valid  ",
            Validity::Invalid => "INVALID",
            Validity::Unknown => "unknown",
        };
        println!("  {v}  {:<28} (invariant {})", r.name, r.invariant);
    }
    let v = match verdict {
        Validity::Valid => "VALID",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "UNKNOWN",
    };
    println!(
        "verdict: {v}; details in {}",
        out.join("results.json").display()
    );
}

fn windows(d: &RunData) -> Vec<(f64, f64, String)> {
    let mut open: Vec<(f64, String)> = Vec::new();
    let mut out = Vec::new();
    let end = d
        .events
        .last()
        .map(|e| e.time_ns as f64 / 1e9)
        .unwrap_or(0.0);
    for e in d.events.iter().filter(|e| e.process == NEMESIS_PROCESS) {
        let t = e.time_ns as f64 / 1e9;
        let name = e.value["nemesis"].as_str().unwrap_or("").to_string();
        match e.value["action"].as_str() {
            Some("installed") => open.push((t, name)),
            Some("healed") | Some("indeterminate") => {
                if let Some(i) = open.iter().position(|o| o.1 == name) {
                    let (s, n) = open.remove(i);
                    out.push((s, t, n));
                }
            }
            _ => {}
        }
    }
    out.extend(open.into_iter().map(|(s, n)| (s, end, n)));
    out
}

/// Writes `latency.svg` and `throughput.svg`.
pub fn write_plots(out: &Path, d: &RunData) -> anyhow::Result<()> {
    let end = d
        .events
        .last()
        .map(|e| e.time_ns as f64 / 1e9)
        .unwrap_or(1.0)
        .max(1.0);
    let (w, h, left, bottom) = (900.0, 360.0, 60.0, 40.0);
    let x = |t: f64| left + (t / end) * (w - left - 10.0);
    let shade = |svg: &mut String| {
        for (s, e, n) in windows(d) {
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="10" width="{:.1}" height="{:.1}" fill="#f4a261" opacity="0.25"><title>{n}</title></rect>"##,
                x(s),
                (x(e) - x(s)).max(1.0),
                h - bottom - 10.0
            );
        }
    };
    // Latency scatter, log scale 1 ms .. 10 s.
    let y = |ms: f64| {
        let l = (ms.clamp(1.0, 10_000.0)).log10() / 4.0;
        (h - bottom) - l * (h - bottom - 10.0)
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    shade(&mut svg);
    for ms in [1.0, 10.0, 100.0, 1000.0, 10000.0] {
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{w}" y1="{0:.1}" y2="{0:.1}" stroke="#ddd"/><text x="5" y="{0:.1}">{ms} ms</text>"##,
            y(ms)
        );
    }
    for o in &d.ops {
        let Some(done) = o.complete_ns else { continue };
        let color = match o.kind {
            Kind::Ok => "#2a9d8f",
            Kind::Fail => "#e76f51",
            _ => "#6c757d",
        };
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{color}"/>"#,
            x(o.invoke_ns as f64 / 1e9),
            y((done - o.invoke_ns) as f64 / 1e6)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{left}" y="{}">time (s) 0 .. {end:.0}; green ok, red fail, grey info; shaded: faults</text></svg>"#,
        h - 10.0
    );
    std::fs::write(out.join("latency.svg"), svg)?;

    // Throughput: ok operations per second.
    let secs = end.ceil() as usize + 1;
    let mut per = vec![0u32; secs];
    for o in d.ops.iter().filter(|o| o.kind == Kind::Ok) {
        if let Some(done) = o.complete_ns {
            per[((done as f64 / 1e9) as usize).min(secs - 1)] += 1;
        }
    }
    let max = f64::from(per.iter().copied().max().unwrap_or(1).max(1));
    let yt = |v: f64| (h - bottom) - (v / max) * (h - bottom - 10.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    shade(&mut svg);
    let points: String = per
        .iter()
        .enumerate()
        .map(|(s, v)| format!("{:.1},{:.1} ", x(s as f64), yt(f64::from(*v))))
        .collect();
    let _ = write!(
        svg,
        r##"<polyline points="{points}" fill="none" stroke="#264653" stroke-width="1.5"/>"##
    );
    let _ = write!(
        svg,
        r#"<text x="5" y="20">{max} ok/s</text><text x="{left}" y="{}">ok operations per second over {end:.0} s; shaded: faults</text></svg>"#,
        h - 10.0
    );
    std::fs::write(out.join("throughput.svg"), svg)?;
    Ok(())
}
