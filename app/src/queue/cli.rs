//! `app dlq list|replay|purge`: the dead-letter commands of the `app` binary (connected to
//! the configured queue by `crate::wiring::run_dlq`).

use std::io::Write;

use clap::Subcommand;

use super::Queue;

/// What to do with dead letters.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// Print dead letters (oldest first): entry id, job id, kind, attempts, last error.
    List {
        /// Queue name (tasks, callbacks, orders, ...).
        #[arg(long, short)]
        queue: String,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this entry id (for paging).
        #[arg(long)]
        after: Option<String>,
        /// Print one JSON array (with the attempt history) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on their queue with a fresh attempt budget.
    Replay {
        /// Queue name.
        #[arg(long, short)]
        queue: String,
        /// Entry ids to replay (from `list`); repeatable.
        #[arg(
            long = "entry",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        entries: Vec<String>,
        /// Replay every dead letter of the queue.
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter of a queue and its job record.
    Purge {
        /// Queue name.
        #[arg(long, short)]
        queue: String,
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs one dead-letter command on `q`, printing to stdout.
pub async fn run(q: &Queue, cmd: DlqCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        DlqCommand::List {
            queue,
            limit,
            after,
            json,
        } => {
            let items = q.dlq_list(&queue, after.as_deref(), limit).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
            } else {
                writeln!(
                    out,
                    "{:<22} {:<34} {:<14} {:>8}  last error",
                    "entry", "job", "kind", "attempts"
                )?;
                for d in &items {
                    writeln!(
                        out,
                        "{:<22} {:<34} {:<14} {:>8}  {}",
                        d.entry, d.job_id, d.kind, d.attempts, d.error
                    )?;
                }
                writeln!(out, "{} dead letter(s) in {queue}", items.len())?;
            }
        }
        DlqCommand::Replay {
            queue,
            entries,
            all,
        } => {
            let ids = if all {
                q.dlq_replay_all(&queue).await?
            } else {
                let mut ids = Vec::new();
                for e in &entries {
                    match q.dlq_replay(&queue, e).await? {
                        Some(id) => ids.push(id),
                        None => eprintln!("entry {e}: not found in the dead letters of {queue}"),
                    }
                }
                ids
            };
            for id in &ids {
                writeln!(out, "replayed {id}")?;
            }
            writeln!(out, "{} job(s) replayed on {queue}", ids.len())?;
        }
        DlqCommand::Purge { queue, yes } => {
            if !yes {
                anyhow::bail!("purge deletes the dead letters of {queue} for good: add --yes");
            }
            let n = q.dlq_purge(&queue).await?;
            writeln!(out, "{n} dead letter(s) purged from {queue}")?;
        }
    }
    Ok(())
}
