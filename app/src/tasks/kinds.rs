//! The built-in task kinds. Each is idempotent: running a task twice has one effect.

use std::time::Duration;

use redis::Script;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Envelope, TASKS_QUEUE};
use crate::queue::{JobContext, JobError, JobOutput, Registry};

pub const KINDS: &[&str] = &["echo", "sleep", "fail", "flaky", "increment"];

/// The schema of a task's `kind`: one of [`KINDS`].
pub fn schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(KINDS.iter().copied()))
        .description(Some("One of the built-in kinds"))
        .build()
}

/// Longest `sleep` a task may ask for (ms).
const MAX_SLEEP_MS: u64 = 10 * 60 * 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepInput {
    ms: u64,
    #[serde(default = "ten")]
    steps: u32,
}

fn ten() -> u32 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailInput {
    #[serde(default)]
    permanent: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlakyInput {
    fail_rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementInput {
    counter: String,
    #[serde(default = "one")]
    by: i64,
    /// Work time before the effect (lets tests kill a worker mid-job).
    #[serde(default)]
    sleep_ms: u64,
}

fn one() -> i64 {
    1
}

fn parse<T: serde::de::DeserializeOwned>(kind: &str, v: &Value) -> Result<T, String> {
    // `null` stands for "no input" and becomes `{}`.
    let v = if v.is_null() { json!({}) } else { v.clone() };
    serde_json::from_value(v).map_err(|e| format!("input of {kind}: {e}"))
}

/// Checks a task's input at submission, so a bad one is a 422 rather than a dead job.
pub fn validate_input(kind: &str, input: &Value) -> Result<(), String> {
    match kind {
        "echo" => Ok(()),
        "sleep" => {
            let s: SleepInput = parse(kind, input)?;
            if s.ms > MAX_SLEEP_MS || s.steps == 0 || s.steps > 1000 {
                return Err(format!(
                    "input of sleep: ms must be <= {MAX_SLEEP_MS}, steps 1-1000"
                ));
            }
            Ok(())
        }
        "fail" => parse::<FailInput>(kind, input).map(|_| ()),
        "flaky" => {
            let f: FlakyInput = parse(kind, input)?;
            if !(0.0..=1.0).contains(&f.fail_rate) {
                return Err("input of flaky: fail_rate must be between 0 and 1".into());
            }
            Ok(())
        }
        "increment" => {
            let i: IncrementInput = parse(kind, input)?;
            // The counter name is the Redis Cluster hash tag of its keys: no braces.
            if i.counter.is_empty()
                || i.counter.len() > 100
                || i.counter.contains(['{', '}'])
                || i.sleep_ms > MAX_SLEEP_MS
            {
                return Err(format!(
                    "input of increment: counter 1-100 characters without braces, sleep_ms <= {MAX_SLEEP_MS}"
                ));
            }
            Ok(())
        }
        other => Err(format!("unknown kind {other:?}")),
    }
}

fn input(ctx: &JobContext) -> Result<Value, JobError> {
    let env: Envelope = serde_json::from_value(ctx.payload.clone())
        .map_err(|e| JobError::permanent(format!("task payload: {e}")))?;
    Ok(env.input)
}

async fn echo(ctx: JobContext) -> Result<JobOutput, JobError> {
    Ok(Some(input(&ctx)?))
}

async fn sleep(ctx: JobContext) -> Result<JobOutput, JobError> {
    let s: SleepInput = parse("sleep", &input(&ctx)?).map_err(JobError::permanent)?;
    let step = Duration::from_millis(s.ms / u64::from(s.steps));
    for i in 1..=s.steps {
        tokio::time::sleep(step).await;
        // Progress is informative: a failed write must not fail the task.
        let pct = (i * 100 / s.steps) as u8;
        if let Err(e) = ctx.progress(pct).await {
            tracing::debug!(error = %e, "progress not recorded");
        }
    }
    Ok(Some(json!({ "slept_ms": s.ms })))
}

async fn fail(ctx: JobContext) -> Result<JobOutput, JobError> {
    let f: FailInput = parse("fail", &input(&ctx)?).map_err(JobError::permanent)?;
    if f.permanent {
        Err(JobError::permanent("requested permanent failure"))
    } else {
        Err(JobError::retry("requested failure"))
    }
}

async fn flaky(ctx: JobContext) -> Result<JobOutput, JobError> {
    let f: FlakyInput = parse("flaky", &input(&ctx)?).map_err(JobError::permanent)?;
    if rand::random::<f64>() < f.fail_rate {
        Err(JobError::retry("flaky failure"))
    } else {
        Ok(Some(json!({ "attempt": ctx.attempt })))
    }
}

/// Adds to a counter once per task: a fence key set in the same script decides whether this
/// run already had its effect (a redelivered task returns the value without adding again).
/// The fence carries the counter's hash tag, so both keys share a slot in a cluster.
const INCREMENT: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return redis.call('INCRBY', KEYS[2], ARGV[1])
end
return tonumber(redis.call('GET', KEYS[2]) or '0')
"#;

async fn increment(ctx: JobContext) -> Result<JobOutput, JobError> {
    let i: IncrementInput = parse("increment", &input(&ctx)?).map_err(JobError::permanent)?;
    if i.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(i.sleep_ms)).await;
    }
    let keys = ctx.queue.keys();
    let mut conn = ctx.queue.connection();
    let value: i64 = Script::new(INCREMENT)
        .key(keys.scoped(&format!("fx:{{{}}}:{}", i.counter, ctx.id)))
        .key(counter_key(&ctx.queue, &i.counter))
        .arg(i.by)
        .arg(ctx.queue.settings().retention_s)
        .invoke_async(&mut conn)
        .await?;
    Ok(Some(json!({ "counter": i.counter, "value": value })))
}

/// The Redis key of an `increment` counter (tagged by its name).
pub fn counter_key(queue: &crate::queue::Queue, name: &str) -> String {
    queue.keys().scoped(&format!("counter:{{{name}}}"))
}

pub fn registry() -> Registry {
    Registry::new()
        .on(TASKS_QUEUE, "echo", echo)
        .on(TASKS_QUEUE, "sleep", sleep)
        .on(TASKS_QUEUE, "fail", fail)
        .on(TASKS_QUEUE, "flaky", flaky)
        .on(TASKS_QUEUE, "increment", increment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs() {
        assert!(validate_input("echo", &json!({"x": 1})).is_ok());
        assert!(validate_input("sleep", &json!({"ms": 10})).is_ok());
        assert!(validate_input("sleep", &json!({"ms": "x"})).is_err());
        assert!(validate_input("sleep", &json!({})).is_err());
        assert!(validate_input("flaky", &json!({"fail_rate": 2.0})).is_err());
        assert!(validate_input("fail", &Value::Null).is_ok());
        assert!(validate_input("increment", &json!({"counter": "c"})).is_ok());
        assert!(validate_input("increment", &json!({"counter": ""})).is_err());
        assert!(validate_input("nope", &Value::Null).is_err());
    }
}
