//! Nothing lost when killed: `segclip train` killed with SIGKILL at 20 random moments, each time
//! resumed, ends with the weights of a run never killed and leaves no stray file; `export` and
//! `convert` killed at random moments leave their target as the old file or the whole new one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use segclip::data::SplitMix64;
use segclip::train::checkpoint;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_segclip")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("segclip-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The smoke config, short, with a checkpoint every two steps.
fn train_args(out: &Path) -> Vec<String> {
    let config = repo().join("configs/smoke.toml").display().to_string();
    let set = |kv: &str| ["--set".to_string(), kv.to_string()];
    let mut args = vec!["train".to_string(), config];
    for kv in ["optim.steps=24", "run.checkpoint_every=2", &format!("run.out={}", out.display())] {
        args.extend(set(kv));
    }
    args
}

/// Starts a run, or resumes it when it has a checkpoint.
fn start(out: &Path) -> Child {
    let args = if checkpoint::path_in(out).exists() {
        vec!["train".to_string(), "--resume".to_string(), out.display().to_string()]
    } else {
        train_args(out)
    };
    Command::new(bin()).args(&args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap()
}

/// Kills `child` after `after` unless it ended first; true when it was killed.
fn kill_after(mut child: Child, after: Duration) -> bool {
    let until = Instant::now() + after;
    while Instant::now() < until {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no handler runs, as when the machine loses power or the OOM killer strikes.
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    out.sort();
    out
}

#[test]
fn a_training_run_killed_20_times_ends_as_one_never_killed() {
    let dir = scratch("train");
    let whole = dir.join("whole");
    let status = Command::new(bin()).args(train_args(&whole)).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let want = checkpoint::read(&checkpoint::path_in(&whole)).unwrap();

    let killed = dir.join("killed");
    let mut rng = SplitMix64::new(20);
    let mut kills = 0;
    let started = Instant::now();
    while kills < 20 {
        assert!(started.elapsed() < Duration::from_secs(600), "the killed run did not finish its 20 kills in 10 minutes");
        // Anywhere from start-up to a few steps in: before the first checkpoint, in one, between.
        let after = Duration::from_millis(50 + rng.next_u64() % 2500);
        if kill_after(start(&killed), after) {
            kills += 1;
            // What a reader sees meanwhile is a whole checkpoint or none.
            if checkpoint::path_in(&killed).exists() {
                checkpoint::read(&checkpoint::path_in(&killed)).expect("a killed run's checkpoint reads back whole");
            }
        } else {
            // It finished before the kill: start the whole killed run again from nothing.
            let _ = std::fs::remove_dir_all(&killed);
        }
    }
    let status = start(&killed).wait_with_output().unwrap();
    assert!(status.status.success());
    let got = checkpoint::read(&checkpoint::path_in(&killed)).unwrap();
    assert_eq!((got.step, got.adam_t), (want.step, want.adam_t));
    for (name, a) in &want.model {
        assert!(a.data == got.model[name].data, "{name}: the killed run's weights differ from the run never killed");
    }
    for (name, a) in &want.optim {
        assert!(a.data == got.optim[name].data, "{name}: the killed run's optimiser state differs");
    }
    assert_eq!(files_in(&killed), files_in(&whole), "the killed run left other files than the whole one");
}

/// Runs `args` again and again, killing it at random moments, and checks after each that
/// `target` is `old` or `new` byte for byte.
fn kill_repeatedly(args: &[String], target: &Path, old: &[u8], new: &[u8], rng: &mut SplitMix64) -> usize {
    let mut killed = 0;
    for _ in 0..20 {
        std::fs::write(target, old).unwrap();
        let child = Command::new(bin()).args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        killed += kill_after(child, Duration::from_millis(rng.next_u64() % 400)) as usize;
        let now = std::fs::read(target).unwrap();
        assert!(now == old || now == new, "{}: neither the old file nor the whole new one ({} bytes)", target.display(), now.len());
    }
    killed
}

#[test]
fn export_and_convert_killed_leave_the_old_file_or_the_whole_new_one() {
    let dir = scratch("export");
    let run = dir.join("run");
    let mut args = train_args(&run);
    args.extend(["--set".into(), "optim.steps=2".into()]);
    assert!(Command::new(bin()).args(&args).output().unwrap().status.success());
    let mut rng = SplitMix64::new(7);

    let target = dir.join("model.safetensors");
    let export: Vec<String> = ["export", run.to_str().unwrap(), target.to_str().unwrap(), "--no-manifest"].iter().map(|s| s.to_string()).collect();
    assert!(Command::new(bin()).args(&export).output().unwrap().status.success());
    let new = std::fs::read(&target).unwrap();
    let killed = kill_repeatedly(&export, &target, b"the old weights file", &new, &mut rng);
    println!("export: killed {killed} of 20 runs");

    let source = repo().join("tests/fixtures/parity/hf_clip_tiny.safetensors");
    let config = repo().join("tests/fixtures/parity/config.json");
    let target = dir.join("clip.safetensors");
    let convert: Vec<String> = ["convert", source.to_str().unwrap(), target.to_str().unwrap(), "--config", config.to_str().unwrap(), "--method", "naclip"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = Command::new(bin()).args(&convert).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = std::fs::read(&target).unwrap();
    let killed = kill_repeatedly(&convert, &target, b"the old converted file", &new, &mut rng);
    println!("convert: killed {killed} of 20 runs");
}
