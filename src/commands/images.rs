//! `dstack pull`, `images`, `rmi`, `prune images`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use runtime::image::Digest;
use runtime::image::layout::OciLayout;
use runtime::image::platform::Platform;
use runtime::image::pull::{NoProgress, Progress, PullOptions, pull as pull_image};
use runtime::image::registry::{Credentials, RegistryClient, RegistryOptions};
use runtime::image::source::Source;
use runtime::image::store::{ImageName, ImageRecord, PruneReport, Store, StoreError};

use super::table::print_table;
use crate::cli::{ListArgs, PullArgs, RmiArgs};
use crate::error::{CliError, CliResult, Context};
use crate::runs::record::{ago, now};
use crate::units::human_size;

/// The store commands touch files owned by the image's users: rootless, they run in dstack's namespace.
fn enter_namespace() -> CliResult<()> {
    runtime::userns::enter_rootless_namespace()?;
    Ok(())
}

pub fn pull(args: PullArgs) -> CliResult<ExitCode> {
    enter_namespace()?;
    let name: ImageName = args.image.parse()?;
    let progress: Box<dyn Progress> = if args.quiet {
        Box::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines)
    };
    let source: Box<dyn Source> = match &name {
        ImageName::Registry(reference) => {
            let credentials = args.creds.as_deref().map(Credentials::parse).transpose()?;
            let options = RegistryOptions {
                credentials,
                ..RegistryOptions::default()
            };
            Box::new(RegistryClient::new(reference, &options)?)
        }
        ImageName::Layout { dir, .. } => Box::new(OciLayout::open(dir)?),
    };
    let store = Store::open_default()?;
    let mut options = PullOptions::new(progress.as_ref());
    if let Some(platform) = &args.platform {
        options.platform = platform.parse::<Platform>()?;
    }
    let image =
        pull_image(&store, source.as_ref(), &name, &options).context(format!("pulling {name}"))?;
    if !args.quiet {
        eprintln!(
            "pulled {} ({} layer{}, {})",
            image.reference,
            image.layer_dirs.len(),
            if image.layer_dirs.len() == 1 { "" } else { "s" },
            human_size(image.size)
        );
    }
    println!("{}", image.manifest_digest);
    Ok(ExitCode::SUCCESS)
}

pub fn list(args: ListArgs) -> CliResult<ExitCode> {
    enter_namespace()?;
    let store = Store::open_default()?;
    let records = store.list()?;
    if args.json {
        let json: Vec<serde_json::Value> = records.iter().map(record_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialize")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = now();
    let header = ["REPOSITORY", "TAG", "DIGEST", "SIZE", "PULLED"].map(String::from);
    let rows: Vec<[String; 5]> = std::iter::once(header)
        .chain(records.iter().map(|r| {
            [
                r.repository.clone(),
                r.tag.clone().unwrap_or_else(|| "<none>".into()),
                short_digest(&r.manifest_digest),
                human_size(r.size),
                ago(now - r.pulled_at as f64),
            ]
        }))
        .collect();
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

pub fn remove(args: RmiArgs) -> CliResult<ExitCode> {
    enter_namespace()?;
    let names = args
        .images
        .iter()
        .map(|i| i.parse::<ImageName>())
        .collect::<Result<Vec<_>, _>>()?;
    let store = Store::open_default()?;
    let report = store.remove(&names).map_err(|e| match e {
        StoreError::NotFound(name) => CliError::new(format!(
            "no image {name} in the local store; `dstack images` lists them"
        )),
        other => other.into(),
    })?;
    for name in &report.images {
        println!("untagged {name}");
    }
    print_freed(&report);
    Ok(ExitCode::SUCCESS)
}

pub fn prune() -> CliResult<ExitCode> {
    enter_namespace()?;
    let store = Store::open_default()?;
    let report = store.prune()?;
    print_freed(&report);
    Ok(ExitCode::SUCCESS)
}

fn print_freed(report: &PruneReport) {
    println!(
        "removed {} blobs, {} layers and {} leftover files: {} freed",
        report.blobs,
        report.layers,
        report.temporary,
        human_size(report.bytes_freed)
    );
    if report.leased > 0 {
        println!("kept {} layers that running containers use", report.leased);
    }
}

fn record_json(r: &ImageRecord) -> serde_json::Value {
    serde_json::json!({
        "name": r.name,
        "repository": r.repository,
        "tag": r.tag,
        "digest": r.manifest_digest.to_string(),
        "index_digest": r.index_digest.as_ref().map(|d| d.to_string()),
        "config_digest": r.config_digest.to_string(),
        "size": r.size,
        "pulled_at": r.pulled_at,
        "layers": r.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
    })
}

fn short_digest(d: &Digest) -> String {
    format!("sha256:{}", &d.hex()[..12])
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

/// One line per event, for logs and pipes.
struct Lines;

impl Progress for Lines {
    fn layer_present(&self, blob: &Digest, _size: u64) {
        eprintln!("{}: already present", short(blob));
    }
    fn layer_started(&self, blob: &Digest, size: u64) {
        eprintln!("{}: pulling ({})", short(blob), human_size(size));
    }
    fn layer_done(&self, blob: &Digest) {
        eprintln!("{}: done", short(blob));
    }
}

/// A bar per layer on a terminal. Redrawn only when bytes arrive: no ticker thread (see ARCHITECTURE.md,
/// fork safety).
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, blob: &Digest, size: u64) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(blob.clone())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
                        .expect("the template is valid")
                        .progress_chars("=> "),
                );
                bar.set_prefix(short(blob).to_string());
                bar
            })
            .clone()
    }
}

impl Progress for Bars {
    fn layer_present(&self, blob: &Digest, size: u64) {
        let bar = self.bar(blob, size);
        bar.set_position(size);
        bar.finish_with_message("already present");
    }
    fn layer_started(&self, blob: &Digest, size: u64) {
        self.bar(blob, size).set_message("pulling");
    }
    fn layer_bytes(&self, blob: &Digest, bytes: u64) {
        self.bar(blob, 0).inc(bytes);
    }
    fn layer_done(&self, blob: &Digest) {
        self.bar(blob, 0).finish_with_message("done");
    }
}
