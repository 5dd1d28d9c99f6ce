//! Developer tasks as code. `cargo xtask dev` runs the local 3-node cluster,
//! `cargo xtask test` runs the whole test suite (what `.ci/run` calls).
//!
//! Both start by making the machine able to build: RocksDB's bindings need
//! libclang, which a fresh machine lacks, so this installs it with apt when
//! it can and otherwise says exactly what to run. This crate depends on
//! nothing but std, so it builds in seconds before anything else.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
cargo xtask <task> [args]

Tasks:
  dev [ARGS]     build quorate and run `quorate dev ARGS` (local 3-node cluster)
  test           format check, clippy, and every test in the workspace
  build          build every binary (debug)
  bench [ARGS]   build quorate and run `quorate bench ARGS` against a running cluster
  jepsen [ARGS]  build and run `quorate-jepsen ARGS` (fault injection; needs root)
  sim [ARGS]     build and run `quorate-jepsen sim ARGS`: the whole-product
                 deterministic simulation. `--seeds N --time T` soaks N seeds
                 of T virtual seconds with a progress bar and a summary;
                 `--seed N` replays one seed exactly
  setup          only install what the build needs (libclang)

Environment:
  CARGO_TARGET_DIR   where builds go; defaults to ~/.cache/quorate/target so
                     that clones share one build cache (RocksDB's C++ takes
                     about 25 minutes to build from scratch on 2 cores)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match task.as_str() {
        "setup" => setup(),
        "build" => setup().and_then(|()| cargo(&["build", "--workspace", "--bins"])),
        "dev" => setup()
            .and_then(|()| cargo(&["build", "-p", "quorate"]))
            .and_then(|()| run_quorate("dev", rest)),
        "bench" => setup()
            .and_then(|()| cargo(&["build", "-p", "quorate"]))
            .and_then(|()| run_quorate("bench", rest)),
        "jepsen" => setup()
            .and_then(|()| cargo(&["build", "--workspace", "--bins"]))
            .and_then(|()| run_bin("quorate-jepsen", rest)),
        "sim" => setup()
            .and_then(|()| sim_cargo(&["build", "-p", "quorate-jepsen", "--features", "sim"]))
            .and_then(|()| {
                let mut args = vec!["sim".to_string()];
                args.extend_from_slice(rest);
                run_in(&sim_target_dir(), "quorate-jepsen", &args)
            }),
        "test" => setup().and_then(|()| test()),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown task {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("xtask: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/quorate/target"),
        None => workspace_root().join("target"),
    }
}

/// The librocksdb-sys version from Cargo.lock, e.g. "0.19.0+11.8.1".
fn rocksdb_version() -> Option<String> {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"librocksdb-sys\"" {
            let v = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(v.trim_end_matches('"').to_string());
        }
    }
    None
}

/// Where the prebuilt `librocksdb.a` of this RocksDB version is kept,
/// beside the build cache.
fn rocksdb_cache_dir() -> Option<PathBuf> {
    let v = rocksdb_version()?;
    let parent = target_dir().parent()?.to_path_buf();
    Some(parent.join(format!("librocksdb-{v}")))
}

/// RocksDB's C++ is the slow part of every clean build, and cargo builds it
/// again for `cargo clippy` (check mode does not share the build-script run
/// here). So the first build's `librocksdb.a` is kept beside the build cache
/// and every later cargo call links it via ROCKSDB_LIB_DIR: one C++ build
/// per machine and RocksDB version, not one per cargo mode.
fn ensure_rocksdb_prebuilt() -> Result<(), String> {
    let Some(cache) = rocksdb_cache_dir() else {
        return Ok(());
    };
    if cache.join("librocksdb.a").exists() {
        return Ok(());
    }
    eprintln!(
        "xtask: building RocksDB once (about 25 minutes on 2 cores); later builds reuse it from {}",
        cache.display()
    );
    run_cargo(&["build", "-p", "quorate"], false)?;
    let build = target_dir().join("debug/build");
    let mut found: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(&build)
        .map_err(|e| format!("{}: {e}", build.display()))?
        .flatten()
    {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with("librocksdb-sys-")
        {
            continue;
        }
        let lib = e.path().join("out/librocksdb.a");
        if let Ok(meta) = std::fs::metadata(&lib) {
            let t = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            if found.as_ref().is_none_or(|(ft, _)| t > *ft) {
                found = Some((t, lib));
            }
        }
    }
    let Some((_, lib)) = found else {
        return Err("built RocksDB but found no librocksdb.a to cache".into());
    };
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let tmp = cache.join("librocksdb.a.tmp");
    std::fs::copy(&lib, &tmp).map_err(|e| format!("copy {}: {e}", lib.display()))?;
    std::fs::rename(&tmp, cache.join("librocksdb.a")).map_err(|e| e.to_string())?;
    Ok(())
}

fn cargo(args: &[&str]) -> Result<(), String> {
    ensure_rocksdb_prebuilt()?;
    run_cargo(args, true)
}

/// The deterministic simulation's builds: with tokio's RNG seedable
/// (`--cfg tokio_unstable`, needed for exact replay), in their own target
/// directory so that the flag never reaches the `quorate` binary and the
/// main build cache is not rebuilt each time the flags change.
fn sim_cargo(args: &[&str]) -> Result<(), String> {
    ensure_rocksdb_prebuilt()?;
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    flags.push_str(" --cfg tokio_unstable");
    run_cargo_with(
        args,
        true,
        &sim_target_dir(),
        &[("RUSTFLAGS", flags.trim().to_string())],
    )
}

fn sim_target_dir() -> PathBuf {
    let mut dir = target_dir().into_os_string();
    dir.push("-sim");
    PathBuf::from(dir)
}

fn run_cargo(args: &[&str], prebuilt_rocksdb: bool) -> Result<(), String> {
    run_cargo_with(args, prebuilt_rocksdb, &target_dir(), &[])
}

fn run_cargo_with(
    args: &[&str],
    prebuilt_rocksdb: bool,
    target: &Path,
    env: &[(&str, String)],
) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut cmd = Command::new(&cargo);
    cmd.args(args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if prebuilt_rocksdb
        && std::env::var_os("ROCKSDB_LIB_DIR").is_none()
        && let Some(cache) = rocksdb_cache_dir().filter(|c| c.join("librocksdb.a").exists())
    {
        cmd.env("ROCKSDB_LIB_DIR", cache).env("ROCKSDB_STATIC", "1");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn run_quorate(sub: &str, rest: &[String]) -> Result<(), String> {
    let mut args = vec![sub.to_string()];
    args.extend_from_slice(rest);
    run_bin("quorate", &args)
}

fn run_bin(name: &str, args: &[String]) -> Result<(), String> {
    run_in(&target_dir(), name, args)
}

fn run_in(target: &Path, name: &str, args: &[String]) -> Result<(), String> {
    let bin = target.join("debug").join(name);
    let status = Command::new(&bin)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("could not run {}: {e}", bin.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} {} exited with {status}", args.join(" ")))
    }
}

fn test() -> Result<(), String> {
    run_cargo(&["fmt", "--all", "--check"], false)?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The simulation is behind a feature (it needs tokio's test utilities).
    cargo(&[
        "clippy",
        "-p",
        "quorate-jepsen",
        "--features",
        "sim",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "quorate-e2e",
        "--",
        "--test-threads",
        "2",
    ])?;
    // The console's in-browser verifier (RFC 9162 proofs, Ed25519 and
    // SHA-256 in WebCrypto) against the same vectors as the Rust verifier.
    console_tests()?;
    // The end-to-end tests run the `quorate` binary. Build it now, after the
    // unit tests: their dev-dependencies switch on test-only fault features,
    // and this build (no dev-dependencies) relinks the binary without them.
    cargo(&["build", "--workspace", "--bins"])?;
    // Each cluster test starts three real nodes; one test at a time keeps
    // two cores from starving their heartbeats. promtool lints what the
    // nodes export on /metrics (t90).
    let promtool = ensure_promtool()?;
    // The console is tested as people see it: headless Chromium against a
    // real cluster (t96), screenshots kept beside the build cache.
    let chromium = ensure_chromium()?;
    let artifacts = target_dir().join("artifacts");
    ensure_rocksdb_prebuilt()?;
    run_cargo_with(
        &["test", "-p", "quorate-e2e", "--", "--test-threads", "1"],
        true,
        &target_dir(),
        &[
            ("QUORATE_PROMTOOL", promtool.to_string_lossy().into_owned()),
            ("QUORATE_CHROMIUM", chromium.to_string_lossy().into_owned()),
            ("QUORATE_REQUIRE_BROWSER", "1".into()),
            (
                "QUORATE_ARTIFACTS",
                artifacts.to_string_lossy().into_owned(),
            ),
        ],
    )?;
    eprintln!(
        "xtask: console screenshots in {}",
        artifacts.join("console").display()
    );
    // The whole-product deterministic simulation: 1,000 seeds under network,
    // crash, power-loss, disk and evaluation faults; built for exact replay.
    sim_cargo(&[
        "test",
        "-p",
        "quorate-jepsen",
        "--features",
        "sim",
        "--test",
        "sim",
        "--",
        // The summary of faults injected and invariants checked.
        "--nocapture",
    ])?;
    // Every fuzz target, briefly, from its corpus: a crash fails CI.
    fuzz_smoke()?;
    // The fault-injection matrix: real nodes in network namespaces, about a
    // minute each; any invalid or unknown verdict fails CI.
    for (nemesis, seed) in [
        ("partition", "1"),
        ("kill,pause,bitflip,wipe", "2"),
        ("membership,delay,duplicate", "3"),
    ] {
        let out = format!("target/jepsen/ci-{}", nemesis.replace(',', "-"));
        let args: Vec<String> = [
            "run",
            "--nodes",
            "3",
            "--time",
            "60",
            "--interval",
            "8",
            "--nemesis",
            nemesis,
            "--seed",
            seed,
            "--out",
            &out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run_bin("quorate-jepsen", &args)?;
    }
    Ok(())
}

/// The cargo-fuzz targets in fuzz/ (see fuzz/README.md).
const FUZZ_TARGETS: [&str; 5] = [
    "authorize_request",
    "export_lines",
    "proof_documents",
    "snapshot",
    "policy_and_plan",
];

/// Runs each fuzz target for 20 seconds from its corpus. Installs
/// cargo-fuzz from crates.io when missing. With a nightly toolchain it uses
/// AddressSanitizer; a machine with only stable builds the targets with
/// RUSTC_BOOTSTRAP=1 and no sanitizer (coverage-guided, panics still
/// caught). New inputs go to a scratch dir, not into the repository.
fn fuzz_smoke() -> Result<(), String> {
    let has = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has(&["fuzz", "--version"]) {
        eprintln!("xtask: installing cargo-fuzz (once)");
        let ok = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("cannot install cargo-fuzz".into());
        }
    }
    ensure_rocksdb_prebuilt()?;
    let nightly = has(&["+nightly", "--version"]);
    let mut target = target_dir().into_os_string();
    target.push("-fuzz");
    let scratch = std::env::temp_dir().join("quorate-fuzz-new");
    if !nightly {
        // Without nightly, cargo-fuzz can only try stable with
        // RUSTC_BOOTSTRAP=1 and no sanitizer. If even that cannot build,
        // this machine cannot fuzz: say so loudly and go on (a crash, once
        // the targets run, still fails CI).
        let mut cmd = Command::new("cargo");
        cmd.args(["fuzz", "build", "-O", "--sanitizer", "none"])
            .current_dir(workspace_root().join("fuzz"))
            .env("CARGO_TARGET_DIR", &target)
            .env("RUSTC_BOOTSTRAP", "1");
        if !cmd.status().is_ok_and(|s| s.success()) {
            eprintln!(
                "xtask: WARNING: fuzz smoke SKIPPED: the fuzz targets do not build without a \
                 nightly toolchain on this machine (see fuzz/README.md)"
            );
            return Ok(());
        }
    }
    for t in FUZZ_TARGETS {
        let corpus = format!("corpus/{t}");
        let new = scratch.join(t);
        std::fs::create_dir_all(&new).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(workspace_root().join("fuzz").join(&corpus))
            .map_err(|e| e.to_string())?;
        let new_s = new.to_string_lossy().into_owned();
        let mut args: Vec<&str> = Vec::new();
        if nightly {
            args.push("+nightly");
        }
        args.extend(["fuzz", "run", "-O"]);
        if !nightly {
            args.extend(["--sanitizer", "none"]);
        }
        args.extend([t, &new_s, &corpus, "--", "-max_total_time=20"]);
        eprintln!("xtask: cargo {}", args.join(" "));
        let mut cmd = Command::new("cargo");
        cmd.args(&args)
            .current_dir(workspace_root().join("fuzz"))
            .env("CARGO_TARGET_DIR", &target);
        if !nightly {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        if std::env::var_os("ROCKSDB_LIB_DIR").is_none()
            && let Some(cache) = rocksdb_cache_dir().filter(|c| c.join("librocksdb.a").exists())
        {
            cmd.env("ROCKSDB_LIB_DIR", cache).env("ROCKSDB_STATIC", "1");
        }
        let ok = cmd.status().is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "fuzz target {t} failed: the crashing input is in fuzz/artifacts/{t}/"
            ));
        }
    }
    Ok(())
}

/// `node --test` over the console's JavaScript tests. Installs Debian's
/// nodejs when there is no `node` (Node 18 or later has the test runner).
fn console_tests() -> Result<(), String> {
    let has_node = || {
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has_node() && is_root() {
        eprintln!("xtask: installing nodejs with apt-get (once)");
        let _ = apt_install(&["nodejs"]);
    }
    if !has_node() {
        return Err("the console tests need Node.js 18 or later: apt-get install nodejs".into());
    }
    eprintln!("xtask: node --test crates/quorate-server/console/tests/");
    let ok = Command::new("node")
        .args(["--test", "crates/quorate-server/console/tests/"])
        .current_dir(workspace_root())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("the console's JavaScript tests failed (node --test crates/quorate-server/console/tests/)".into())
    }
}

/// Headless Chromium for the console's browser tests: on PATH, or Debian's
/// `chromium` package installed once (about 80 MB), with fonts.
fn ensure_chromium() -> Result<PathBuf, String> {
    let found = || {
        ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(PathBuf::from)
    };
    if let Some(b) = found() {
        return Ok(b);
    }
    if is_root() {
        eprintln!("xtask: installing chromium with apt-get (once)");
        // With fonts, for text in the screenshots on a machine with none yet.
        let _ = apt_install(&["chromium", "fonts-dejavu-core", "fonts-liberation"]);
    }
    found().ok_or_else(|| {
        "the console's browser tests need Chromium: apt-get install chromium".to_string()
    })
}

/// Prometheus's `promtool`, for linting `/metrics`: on PATH, or taken once
/// from Debian's `prometheus` package into the cache beside the build
/// directory (`apt-get download` and `dpkg-deb -x`: nothing is installed,
/// no server is started).
fn ensure_promtool() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("promtool").arg("--version").output()
        && out.status.success()
    {
        return Ok(PathBuf::from("promtool"));
    }
    let parent = target_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = parent.join("promtool");
    let bin = dir.join("promtool");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("xtask: fetching promtool from Debian's prometheus package (once)");
    let work = dir.join("deb");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-qq", "prometheus"])
            .current_dir(&work)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        // The package lists may be missing on a fresh machine.
        let _ = Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if !download() {
            return Err(
                "cannot download Debian's prometheus package for promtool; install it with                  `apt-get install prometheus` or put promtool on PATH"
                    .into(),
            );
        }
    }
    let deb = std::fs::read_dir(&work)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let root = work.join("root");
    let ok = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .is_ok_and(|s| s.success());
    let found = root.join("usr/bin/promtool");
    if !ok || !found.exists() {
        return Err(format!("{} holds no usr/bin/promtool", deb.display()));
    }
    std::fs::rename(&found, &bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(bin)
}

/// True when a libclang shared library can be found where bindgen looks.
fn has_libclang() -> bool {
    if let Some(dir) = std::env::var_os("LIBCLANG_PATH")
        && Path::new(&dir).exists()
    {
        return true;
    }
    let mut dirs: Vec<PathBuf> = vec![
        "/usr/lib".into(),
        "/usr/lib64".into(),
        "/usr/local/lib".into(),
        "/usr/lib/x86_64-linux-gnu".into(),
        "/usr/lib/aarch64-linux-gnu".into(),
    ];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("llvm-") {
                dirs.push(e.path().join("lib"));
            }
        }
    }
    dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("libclang") && n.contains(".so") && !n.starts_with("libclang-cpp")
            })
        })
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs the system packages the build needs, or says how.
fn setup() -> Result<(), String> {
    if has_libclang() {
        return Ok(());
    }
    let how = "apt-get update && apt-get install -y libclang-dev";
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        return Err(format!(
            "RocksDB's bindings need libclang, which is not installed.\n\
             Install it (as root) with:\n    {how}\n\
             or point LIBCLANG_PATH at a directory holding libclang.so, then rerun."
        ));
    }
    eprintln!("xtask: libclang is missing; installing libclang-dev with apt-get (needed once)");
    apt_install(&["libclang-dev"]).map_err(|e| format!("{e}; run `{how}` by hand"))?;
    if has_libclang() {
        Ok(())
    } else {
        Err(format!(
            "installed libclang-dev but still cannot find libclang.so; set LIBCLANG_PATH or run `{how}`"
        ))
    }
}

/// `apt-get update` then `apt-get install` of `packages` (no recommends,
/// non-interactive). Err says which step failed.
fn apt_install(packages: &[&str]) -> Result<(), String> {
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    for args in [&["update", "-qq"][..], &install[..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("could not run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("`apt-get {}` failed ({status})", args.join(" ")));
        }
    }
    Ok(())
}
