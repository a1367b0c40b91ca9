//! Run records: one directory per run under `<state root>/runs/`, with its state, output and artifacts.

pub mod fsutil;
