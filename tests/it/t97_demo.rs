//! `quorate demo` end to end: it starts the dev cluster (on the dev ports,
//! 7101-7103 and 7201-7203, which must be free), plays the whole story and
//! exits 0 only if every step held: policy answers as scripted, every answer
//! of the contained survivor a DENY, recovery, and a verified export.

use std::time::Duration;

use quorate_e2e::cli;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t97_the_demo_plays_its_story_and_verifies_the_log() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("dev");
    let data_s = data.to_string_lossy().into_owned();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        cli(&["demo", "--no-open", "--pace-ms", "0", "--data-dir", &data_s])
    })
    .await?;
    // Stop the cluster the demo left running, whatever happened.
    if let Ok(pids) = std::fs::read_to_string(data.join("pids")) {
        for pid in pids
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(_, p)| p)
        {
            let _ = std::process::Command::new("kill").arg(pid).status();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(code, 0, "demo failed:\n{out}\n{err}");
    for step in 1..=7 {
        assert!(
            out.contains(&format!("[{step}/7]")),
            "step {step} missing:\n{out}"
        );
    }
    assert_eq!(out.matches("DENY NO_QUORUM").count(), 3, "{out}");
    assert!(out.contains("DENY POLICY"), "{out}");
    assert!(
        out.contains("shadow so far: 3 shadowed, 2 would have been denied"),
        "the candidate was shadowed, not enforced:\n{out}"
    );
    assert!(
        out.contains("\"valid\": true"),
        "the export verified:\n{out}"
    );
    assert!(
        out.contains("#token=qct1."),
        "a sign-in link is printed:\n{out}"
    );
    Ok(())
}
