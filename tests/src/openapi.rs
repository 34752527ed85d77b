//! The API docs' tables from the services' OpenAPI documents: [`endpoints`] and [`schemas`]
//! render markdown from a document (as JSON), and [`check_block`] holds a generated block of
//! a docs page equal to it, between `<!-- openapi:NAME -->` and `<!-- /openapi:NAME -->`.
//! `LB_BLESS_DOCS=1` rewrites the block instead of failing (then review the diff).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// Set to `1` to rewrite generated docs blocks instead of failing on a difference.
pub const BLESS_VAR: &str = "LB_BLESS_DOCS";

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Statuses every operation has and the page says once, above the table.
const COMMON: [&str; 2] = ["401", "default"];

/// `| method | path | body | answers | what |`, one row per operation, in the document's
/// order. Answers are `STATUS Schema` for bodies, a bare status for errors (`ErrorBody`),
/// `STATUS (no body)` for an empty answer,
/// leaving out the statuses every operation has (401 without the token, `default`).
pub fn endpoints(doc: &Value) -> String {
    let mut out =
        String::from("| method | path | body | answers | what |\n|---|---|---|---|---|\n");
    let paths = doc["paths"].as_object().into_iter().flatten();
    for (path, item) in paths {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let body = request_body(op);
            let answers = answers(op);
            let what = op["summary"].as_str().unwrap_or("").replace('\n', " ");
            let _ = writeln!(
                out,
                "| {} | `{path}` | {body} | {answers} | {} |",
                method.to_uppercase(),
                cell(&what)
            );
        }
    }
    out
}

fn request_body(op: &Value) -> String {
    let Some(rb) = op.get("requestBody") else {
        return String::new();
    };
    let schema = rb["content"]
        .as_object()
        .and_then(|c| c.values().next())
        .map(|m| type_name(&m["schema"]))
        .unwrap_or_default();
    let schema = schema.trim_end_matches(" \\| null").to_string();
    if rb["required"].as_bool() == Some(true) {
        schema
    } else {
        format!("{schema} (optional)")
    }
}

fn answers(op: &Value) -> String {
    let mut parts = Vec::new();
    for (status, resp) in op["responses"].as_object().into_iter().flatten() {
        if COMMON.contains(&status.as_str()) {
            continue;
        }
        let body = resp["content"]
            .as_object()
            .and_then(|c| c.iter().next())
            .map(|(media, m)| match media.as_str() {
                "application/json" => type_name(&m["schema"]),
                other => format!("`{other}`"),
            })
            .unwrap_or_default();
        if body == "`ErrorBody`" {
            parts.push(status.clone());
        } else if body.is_empty() {
            parts.push(format!("{status} (no body)"));
        } else {
            parts.push(format!("{status} {body}").trim().to_string());
        }
    }
    parts.join(", ")
}

/// A section per schema of `names`: its description and a `| field | type | required |
/// description |` table (an enum lists its values instead).
pub fn schemas(doc: &Value, names: &[&str]) -> String {
    let mut out = String::new();
    for name in names {
        let s = &doc["components"]["schemas"][name];
        let _ = writeln!(out, "#### {name}\n");
        if let Some(d) = s["description"].as_str() {
            let _ = writeln!(out, "{}\n", d.trim());
        }
        if let Some(values) = s["enum"].as_array() {
            let _ = writeln!(out, "One of {}.\n", enum_values(values));
            continue;
        }
        let Some(props) = s["properties"].as_object() else {
            let _ = writeln!(out, "{}\n", type_name(s));
            continue;
        };
        let required: Vec<&str> = s["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str("| field | type | required | description |\n|---|---|---|---|\n");
        for (field, p) in props {
            let req = if required.contains(&field.as_str()) {
                "yes"
            } else {
                ""
            };
            let desc = p["description"]
                .as_str()
                .or_else(|| p["oneOf"][0]["description"].as_str())
                .unwrap_or("");
            let _ = writeln!(
                out,
                "| `{field}` | {} | {req} | {} |",
                type_name(p),
                cell(&limits(p, desc))
            );
        }
        out.push('\n');
    }
    out
}

/// The description with the schema's numeric limits and pattern, when it has any.
fn limits(p: &Value, desc: &str) -> String {
    let mut extra = Vec::new();
    match (p["minimum"].as_u64(), p["maximum"].as_u64()) {
        (Some(lo), Some(hi)) => extra.push(format!("{lo}-{hi}")),
        (Some(lo), None) if lo > 0 => extra.push(format!("at least {lo}")),
        (_, Some(hi)) => extra.push(format!("at most {hi}")),
        _ => {}
    }
    if let Some(pat) = p["pattern"].as_str() {
        extra.push(format!("pattern `{pat}`"));
    }
    if extra.is_empty() {
        desc.to_string()
    } else {
        format!("{desc} ({})", extra.join(", ")).trim().to_string()
    }
}

fn enum_values(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| {
            format!(
                "`{}`",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A schema as a short type: `Vip`, `[Backend]`, `integer`, `string \| null`.
fn type_name(s: &Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        return format!("`{}`", r.rsplit('/').next().unwrap_or(r));
    }
    if let Some(alts) = s["oneOf"].as_array().or_else(|| s["anyOf"].as_array()) {
        return alts.iter().map(type_name).collect::<Vec<_>>().join(" \\| ");
    }
    if let Some(values) = s["enum"].as_array() {
        return enum_values(values).replace(", ", " \\| ");
    }
    let types: Vec<String> = match &s["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => vec![if s.as_object().is_some_and(|o| o.is_empty()) {
            "any".into()
        } else {
            "object".into()
        }],
    };
    types
        .iter()
        .map(|t| match t.as_str() {
            "array" => format!("[{}]", type_name(&s["items"])),
            "object" if s["additionalProperties"].is_object() => {
                format!("{{string: {}}}", type_name(&s["additionalProperties"]))
            }
            "string" => s["format"]
                .as_str()
                .map_or_else(|| "string".into(), |f| format!("string ({f})")),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" \\| ")
}

/// Text fit for one table cell.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `| status | code | when |` from `(status, code, meaning)` rows: a service's error table.
pub fn error_table<'a>(rows: impl IntoIterator<Item = (u16, String, &'a str)>) -> String {
    let mut t = String::from("| status | code | when |\n|---|---|---|\n");
    for (status, code, when) in rows {
        let _ = writeln!(t, "| {status} | `{code}` | {} |", cell(when));
    }
    t
}

/// Holds a service's API page equal to its document: the blocks `errors` (`errors`, from
/// [`error_table`]), `endpoints` and `schemas` (every schema of the document).
pub fn check_page(page: &Path, doc: &Value, errors: &str) -> Result<(), String> {
    let names: Vec<&str> = doc["components"]["schemas"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let blocks = [
        ("errors", errors.to_string()),
        ("endpoints", endpoints(doc)),
        ("schemas", schemas(doc, &names)),
    ];
    let problems: Vec<String> = blocks
        .iter()
        .filter_map(|(name, md)| check_block(page, name, md).err())
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n\n"))
    }
}

/// Holds the block `name` of the markdown file `page` equal to `content`: returns an error
/// naming the page, the block and the way to update it when they differ (or rewrites the
/// block when `LB_BLESS_DOCS=1`).
pub fn check_block(page: &Path, name: &str, content: &str) -> Result<(), String> {
    let text =
        std::fs::read_to_string(page).map_err(|e| format!("reading {}: {e}", page.display()))?;
    let begin = format!("<!-- openapi:{name} -->\n");
    let end = format!("<!-- /openapi:{name} -->");
    let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) else {
        return Err(format!(
            "{}: no block `{}...{end}`: add one where the generated text belongs",
            page.display(),
            begin.trim_end()
        ));
    };
    let start = b + begin.len();
    if e < start {
        return Err(format!(
            "{}: block {name} ends before it starts",
            page.display()
        ));
    }
    let current = &text[start..e];
    let wanted = format!("{}\n", content.trim_end());
    if current == wanted {
        return Ok(());
    }
    if std::env::var(BLESS_VAR).as_deref() == Ok("1") {
        let updated = format!("{}{wanted}{}", &text[..start], &text[e..]);
        return std::fs::write(page, updated)
            .map_err(|e| format!("writing {}: {e}", page.display()));
    }
    let first = current
        .lines()
        .zip(wanted.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| current.lines().count().min(wanted.lines().count()));
    Err(format!(
        "{} block `{name}` differs from the OpenAPI document (first at its line {}):\n  page:      {}\n  generated: {}\n\
         Run the test again with {BLESS_VAR}=1 to rewrite the block, and review the diff.",
        page.display(),
        first + 1,
        current.lines().nth(first).unwrap_or("(end)"),
        wanted.lines().nth(first).unwrap_or("(end)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "paths": {"/v1/things/{id}": {
                "post": {"summary": "Sets a thing | carefully.",
                    "requestBody": {"content": {"application/json": {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/Thing"}, {"type": "null"}]}}}},
                    "responses": {
                        "200": {"content": {"application/json": {"schema": {"type": "array",
                            "items": {"$ref": "#/components/schemas/Thing"}}}}},
                        "401": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}},
                        "404": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}},
                        "default": {}}}}},
            "components": {"schemas": {"Thing": {"type": "object", "description": "A thing.",
                "required": ["n"], "properties": {
                    "n": {"type": "integer", "minimum": 0, "maximum": 9, "description": "How many."},
                    "tags": {"type": ["array", "null"], "items": {"type": "string"}}}},
                "Kind": {"type": "string", "enum": ["a", "b"]}}}
        })
    }

    #[test]
    fn endpoints_leave_out_what_every_operation_has() {
        assert_eq!(
            endpoints(&doc()).lines().nth(2),
            Some(
                "| POST | `/v1/things/{id}` | `Thing` (optional) | 200 [`Thing`], 404 | Sets a thing \\| carefully. |"
            )
        );
    }

    #[test]
    fn schemas_list_fields_with_types_and_limits() {
        let md = schemas(&doc(), &["Thing", "Kind"]);
        assert!(
            md.contains("| `n` | integer | yes | How many. (0-9) |"),
            "{md}"
        );
        assert!(md.contains("| `tags` | [string] \\| null |  |  |"), "{md}");
        assert!(md.contains("#### Kind\n\nOne of `a`, `b`."), "{md}");
    }

    #[test]
    fn blocks_are_checked_and_blessed() {
        let dir = std::env::temp_dir().join(format!("openapi-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let page = dir.join("api.md");
        std::fs::write(
            &page,
            "# API\n<!-- openapi:x -->\nold\n<!-- /openapi:x -->\ntail\n",
        )
        .expect("write");
        let err = check_block(&page, "x", "new").unwrap_err();
        assert!(
            err.contains("page:      old") && err.contains("generated: new"),
            "{err}"
        );
        assert!(
            check_block(&page, "y", "new")
                .unwrap_err()
                .contains("no block")
        );
        std::fs::write(
            &page,
            "# API\n<!-- openapi:x -->\nnew\n<!-- /openapi:x -->\ntail\n",
        )
        .expect("write");
        assert_eq!(check_block(&page, "x", "new\n"), Ok(()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
