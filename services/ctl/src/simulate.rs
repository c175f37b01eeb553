//! `collectionsctl simulate` and `collectionsctl policy check`: offline, pure core.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use collections_core::{
    sim::{parse_horizon, simulate, Entry, Scenario, Timeline},
    Policy,
};
use jiff::{tz::TimeZone, Timestamp};
use serde_json::json;

/// Loads and validates a policy file.
fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy {}", path.display()))?;
    Policy::from_toml_str(&text).with_context(|| format!("policy {}", path.display()))
}

/// `policy check FILE...`: fails on the first invalid file.
pub fn check_policies(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut bad = 0;
    for f in files {
        match load_policy(f) {
            Ok(p) => println!("ok       {}  version {}", f.display(), p.version()),
            Err(e) => {
                bad += 1;
                println!("INVALID  {}  {e:#}", f.display());
            }
        }
    }
    if bad > 0 {
        bail!("{bad} policy file(s) refused");
    }
    Ok(())
}

/// `simulate SCENARIO [--policy A [--policy B]] [--json] [--horizon D]`.
pub fn run(
    scenario_path: &Path,
    policies: &[PathBuf],
    as_json: bool,
    horizon: Option<&str>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(scenario_path)
        .with_context(|| format!("cannot read scenario {}", scenario_path.display()))?;
    let mut scenario = Scenario::from_toml_str(&text)
        .with_context(|| format!("scenario {}", scenario_path.display()))?;
    if let Some(h) = horizon {
        scenario.horizon = parse_horizon(h)
            .with_context(|| format!("--horizon {h:?} is not a duration (\"72h\", \"8d\")"))?;
    }
    let mut chosen: Vec<(String, Policy)> = Vec::new();
    if policies.is_empty() {
        match &scenario.policy {
            Some(rel) => {
                let base = scenario_path.parent().unwrap_or(Path::new("."));
                let path = base.join(rel);
                chosen.push((path.display().to_string(), load_policy(&path)?));
            }
            None => chosen.push(("built-in default".to_owned(), Policy::default())),
        }
    } else {
        if policies.len() > 2 {
            bail!("--policy compares at most two policies");
        }
        for p in policies {
            chosen.push((p.display().to_string(), load_policy(p)?));
        }
    }
    let timelines: Vec<(String, Timeline)> = chosen
        .iter()
        .map(|(name, p)| (name.clone(), simulate(p, &scenario, None)))
        .collect();
    if as_json {
        let out = json!({
            "scenario": scenario.name,
            "runs": timelines.iter().map(|(name, t)| json!({
                "policy": name,
                "policy_version": t.policy_version,
                "until": t.until,
                "timeline": t.entries,
            })).collect::<Vec<_>>(),
        });
        emit(&format!("{}\n", serde_json::to_string_pretty(&out)?));
        return Ok(());
    }
    let mut out = String::new();
    let _ = writeln!(out, "scenario {}", scenario.name);
    if !scenario.description.is_empty() {
        for l in scenario.description.lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
    match timelines.as_slice() {
        [(name, t)] => {
            let _ = writeln!(out, "policy   {name} ({})\n", t.policy_version);
            print_table(&mut out, t);
        }
        [(a_name, a), (b_name, b)] => {
            let _ = writeln!(out, "A: {a_name} ({})", a.policy_version);
            let _ = writeln!(out, "B: {b_name} ({})\n", b.policy_version);
            print_side_by_side(&mut out, a, b);
        }
        _ => {}
    }
    emit(&out);
    Ok(())
}

fn local(t: Timestamp, zone: &str) -> String {
    let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
    t.to_zoned(tz).strftime("%a %m-%d %H:%M %Z").to_string()
}

fn print_table(out: &mut String, t: &Timeline) {
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:<10} {:<18} {:<13} {:<8} {:>3} {:<20} {:<7} why",
        "when (local)", "account", "state", "kind", "channel", "tone", "pri", "due (local)", "dpd"
    );
    for e in &t.entries {
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:<10} {:<18} {:<13} {:<8} {:>3} {:<20} {:<7} {}",
            local(e.at, &e.timezone),
            short(&e.account_id, 10),
            e.state,
            e.kind,
            e.channel.as_deref().unwrap_or(""),
            e.tone.as_deref().unwrap_or(""),
            e.priority.map(|p| p.to_string()).unwrap_or_default(),
            e.due_at.map(|d| local(d, &e.timezone)).unwrap_or_default(),
            match (&e.bucket, e.dpd) {
                (Some(b), Some(d)) => format!("{b}/{d}"),
                _ => String::new(),
            },
            e.reason
        );
    }
}

fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn cell(e: &Entry) -> String {
    if e.is_task() {
        format!(
            "{} {} {} {} {}",
            e.state,
            e.kind,
            e.channel.as_deref().unwrap_or(""),
            e.tone.as_deref().unwrap_or(""),
            e.due_at.map(|d| local(d, &e.timezone)).unwrap_or_default()
        )
    } else {
        format!("{} {}", e.state, e.kind)
    }
}

/// Walks both timelines in time order; a line the two runs share shows in both columns,
/// a line only one run has shows in its column alone, marked with `*`.
fn print_side_by_side(out: &mut String, a: &Timeline, b: &Timeline) {
    let w = 62;
    let _ = writeln!(out, "  {:<20} {:<w$} {:<w$}", "when (local)", "A", "B");
    let (mut i, mut j) = (0, 0);
    let (ea, eb) = (&a.entries, &b.entries);
    while i < ea.len() || j < eb.len() {
        let x = ea.get(i);
        let y = eb.get(j);
        match (x, y) {
            (Some(x), Some(y)) if x.at == y.at && cell(x) == cell(y) => {
                let _ = writeln!(
                    out,
                    "  {:<20} {:<w$} {:<w$}",
                    local(x.at, &x.timezone),
                    cell(x),
                    cell(y)
                );
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.at <= y.at => {
                let _ = writeln!(
                    out,
                    "* {:<20} {:<w$} {:<w$}",
                    local(x.at, &x.timezone),
                    cell(x),
                    ""
                );
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                let _ = writeln!(
                    out,
                    "* {:<20} {:<w$} {:<w$}",
                    local(y.at, &y.timezone),
                    "",
                    cell(y)
                );
                j += 1;
            }
            (Some(x), None) => {
                let _ = writeln!(
                    out,
                    "* {:<20} {:<w$} {:<w$}",
                    local(x.at, &x.timezone),
                    cell(x),
                    ""
                );
                i += 1;
            }
            (None, None) => break,
        }
    }
}

/// Writes the whole output at once; a reader that went away (`simulate … | head`) is not
/// an error worth a panic.
fn emit(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("cannot write the timeline: {e}");
        }
    }
}
