//! Logging as runc does it: `--log FILE` (else stderr), `--log-format text|json`, `--debug`. Callers such
//! as conmon read the last error from the log file, so errors go there too.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Sink {
    file: Option<Mutex<File>>,
    format: Format,
}

static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

fn now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

fn write(level: &str, msg: &str) {
    let Some(sink) = SINK.get() else {
        eprintln!("{level}: {msg}");
        return;
    };
    let line = match sink.format {
        Format::Json => format!(
            "{}\n",
            serde_json::json!({ "level": level, "msg": msg, "time": now() })
        ),
        Format::Text => format!("{level}: {msg}\n"),
    };
    match &sink.file {
        Some(f) => {
            if let Ok(mut f) = f.lock() {
                let _ = f.write_all(line.as_bytes());
            }
            // The caller (a person at a terminal, or a tool capturing stderr) should see errors too.
            if level == "error" && sink.format == Format::Text {
                let _ = std::io::stderr().write_all(line.as_bytes());
            } else if level == "error" {
                eprintln!("{level}: {msg}");
            }
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

pub fn error(msg: &str) {
    write("error", msg);
}

struct Layer {
    debug: bool,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        let shown = level <= tracing::Level::WARN || (self.debug && level <= tracing::Level::DEBUG);
        if !shown {
            return;
        }
        let mut msg = Message(String::new());
        event.record(&mut msg);
        write(&level.to_string().to_lowercase(), &msg.0);
    }
}

pub fn init(file: Option<&Path>, format: Format, debug: bool) {
    let file = file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let _ = SINK.set(Sink {
        file: file.map(Mutex::new),
        format,
    });
    let _ = tracing_subscriber::registry()
        .with(Layer { debug })
        .try_init();
}
