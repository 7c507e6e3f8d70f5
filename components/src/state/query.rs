//! Dapr's state query language, evaluated over a store's items: a
//! `filter` tree (`EQ`, `NEQ`, `GT`, `GTE`, `LT`, `LTE`, `IN`, `AND`, `OR`)
//! on dotted paths into each JSON value, a `sort` list and a `page` with
//! `limit` and the opaque `token` of the previous page.
//!
//! Parsing is strict — an unknown operator or a misshapen clause is an
//! error naming it — because a query that silently matched everything would
//! be worse than one refused.

use std::cmp::Ordering;

use serde_json::Value;

/// A filter clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Compare the value at `path` with a constant.
    Compare(Op, Vec<String>, Value),
    /// The value at `path` equals one of the constants.
    In(Vec<String>, Vec<Value>),
    /// Every clause holds.
    And(Vec<Filter>),
    /// Some clause holds.
    Or(Vec<Filter>),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// One sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    /// Dotted path into the value.
    pub path: Vec<String>,
    /// Descending instead of ascending.
    pub descending: bool,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// None matches every item.
    pub filter: Option<Filter>,
    pub sort: Vec<Sort>,
    /// Most results per page (None: all).
    pub limit: Option<usize>,
    /// Where this page starts.
    pub offset: usize,
}

fn path(key: &str) -> Result<Vec<String>, String> {
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!("{key:?} is not a path such as person.org"));
    }
    Ok(key.split('.').map(str::to_string).collect())
}

/// The single `{"path": value}` member of a comparison.
fn single(op: &str, v: &Value) -> Result<(Vec<String>, Value), String> {
    match v.as_object() {
        Some(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().ok_or_else(|| format!("{op} needs one path"))?;
            Ok((path(k)?, v.clone()))
        }
        _ => Err(format!(
            "{op} takes an object with exactly one path, e.g. {{\"{op}\": {{\"person.org\": \"A\"}}}}"
        )),
    }
}

fn filter(v: &Value, depth: usize) -> Result<Filter, String> {
    if depth > 32 {
        return Err("filter is nested too deeply".into());
    }
    let m = v
        .as_object()
        .filter(|m| m.len() == 1)
        .ok_or("each filter clause is an object with one operator")?;
    let (op, arg) = m.iter().next().ok_or("empty filter clause")?;
    let cmp = |o: Op| single(op, arg).map(|(p, v)| Filter::Compare(o, p, v));
    match op.as_str() {
        "EQ" => cmp(Op::Eq),
        "NEQ" => cmp(Op::Neq),
        "GT" => cmp(Op::Gt),
        "GTE" => cmp(Op::Gte),
        "LT" => cmp(Op::Lt),
        "LTE" => cmp(Op::Lte),
        "IN" => {
            let (p, list) = single(op, arg)?;
            match list {
                Value::Array(items) if !items.is_empty() => Ok(Filter::In(p, items)),
                _ => Err("IN takes a non-empty list of values".into()),
            }
        }
        "AND" | "OR" => {
            let clauses = arg
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("{op} takes a non-empty list of clauses"))?
                .iter()
                .map(|c| filter(c, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "AND" {
                Filter::And(clauses)
            } else {
                Filter::Or(clauses)
            })
        }
        other => Err(format!(
            "unknown filter operator {other:?} (expected EQ, NEQ, GT, GTE, LT, LTE, IN, AND or OR)"
        )),
    }
}

/// Parses a query's JSON text.
pub fn parse(text: &[u8]) -> Result<Query, String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("the query is not JSON: {e}"))?;
    let m = v
        .as_object()
        .ok_or("the query is a JSON object with filter, sort and page")?;
    let mut q = Query::default();
    for (k, v) in m {
        match k.as_str() {
            "filter" => {
                q.filter = match v {
                    Value::Null => None,
                    Value::Object(o) if o.is_empty() => None,
                    v => Some(filter(v, 0)?),
                }
            }
            "sort" => {
                for s in v.as_array().ok_or("sort is a list of {key, order}")? {
                    let key = s["key"].as_str().ok_or("each sort entry needs a key")?;
                    let descending = match s.get("order").and_then(Value::as_str) {
                        None | Some("ASC") => false,
                        Some("DESC") => true,
                        Some(o) => return Err(format!("sort order {o:?} is not ASC or DESC")),
                    };
                    q.sort.push(Sort {
                        path: path(key)?,
                        descending,
                    });
                }
            }
            "page" => {
                if let Some(l) = v.get("limit").filter(|l| !l.is_null()) {
                    let n = l
                        .as_u64()
                        .filter(|n| *n > 0)
                        .ok_or("page.limit is a positive whole number")?;
                    q.limit = Some(usize::try_from(n).unwrap_or(usize::MAX));
                }
                if let Some(t) = v.get("token").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    q.offset = t
                        .parse()
                        .map_err(|_| format!("page.token {t:?} was not given by this store"))?;
                }
            }
            other => {
                return Err(format!(
                    "unknown query field {other:?} (expected filter, sort, page)"
                ));
            }
        }
    }
    Ok(q)
}

fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k.as_str()))
}

/// Orders two JSON values of the same kind (numbers numerically, strings
/// lexically); None when they cannot be ordered.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    order(a, b).map_or(a == b, Ordering::is_eq)
}

/// Whether a value matches a filter.
pub fn matches(f: &Filter, v: &Value) -> bool {
    match f {
        Filter::Compare(op, p, want) => {
            let Some(have) = at(v, p) else {
                return *op == Op::Neq;
            };
            match op {
                Op::Eq => equal(have, want),
                Op::Neq => !equal(have, want),
                Op::Gt => order(have, want) == Some(Ordering::Greater),
                Op::Gte => matches!(order(have, want), Some(Ordering::Greater | Ordering::Equal)),
                Op::Lt => order(have, want) == Some(Ordering::Less),
                Op::Lte => matches!(order(have, want), Some(Ordering::Less | Ordering::Equal)),
            }
        }
        Filter::In(p, list) => at(v, p).is_some_and(|have| list.iter().any(|w| equal(have, w))),
        Filter::And(all) => all.iter().all(|c| matches(c, v)),
        Filter::Or(any) => any.iter().any(|c| matches(c, v)),
    }
}

/// Runs `q` over `(key, value, payload)` rows whose values parse as JSON
/// (others cannot match a path and are skipped): the page's rows and the
/// token of the next page, if there is one.
pub fn run<T>(q: &Query, rows: Vec<(String, Value, T)>) -> (Vec<(String, T)>, Option<String>) {
    let mut hits: Vec<(String, Value, T)> = rows
        .into_iter()
        .filter(|(_, v, _)| q.filter.as_ref().is_none_or(|f| matches(f, v)))
        .collect();
    hits.sort_by(|a, b| {
        for s in &q.sort {
            let o = match (at(&a.1, &s.path), at(&b.1, &s.path)) {
                (Some(x), Some(y)) => order(x, y).unwrap_or(Ordering::Equal),
                // Items without the sort key come last either way.
                (Some(_), None) => return Ordering::Less,
                (None, Some(_)) => return Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            let o = if s.descending { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        a.0.cmp(&b.0)
    });
    let total = hits.len();
    let page: Vec<(String, T)> = hits
        .into_iter()
        .skip(q.offset)
        .take(q.limit.unwrap_or(usize::MAX))
        .map(|(k, _, t)| (k, t))
        .collect();
    let next = q.offset.saturating_add(page.len());
    let token = (q.limit.is_some() && next < total).then(|| next.to_string());
    (page, token)
}

/// A SQL condition that keeps at least every row `f` matches, over the
/// jsonb expression `doc`, with its values appended to `params` (numbered
/// after `first` placeholders already used); None where a clause cannot be
/// translated (it then keeps every row). The engine still applies `f` to
/// what the database returns, so a looser condition is never wrong — only
/// slower.
pub fn sql_prefilter(f: &Filter, first: usize, params: &mut Vec<String>) -> Option<String> {
    let mark = params.len();
    let sql = translate(f, first, params);
    if sql.is_none() {
        // A clause given up on takes back its placeholders: the statement
        // may not name a parameter it does not use.
        params.truncate(mark);
    }
    sql
}

fn translate(f: &Filter, first: usize, params: &mut Vec<String>) -> Option<String> {
    let param = |v: String, params: &mut Vec<String>| {
        params.push(v);
        format!("${}", first + params.len())
    };
    let path = |p: &[String], params: &mut Vec<String>| {
        let parts: Vec<String> = p
            .iter()
            .map(|s| format!("{}::text", param(s.clone(), params)))
            .collect();
        format!("(doc #> ARRAY[{}])", parts.join(", "))
    };
    match f {
        // Ordering other than of numbers depends on collations; left to the engine.
        Filter::Compare(op, _, c) if !matches!(op, Op::Eq | Op::Neq) && !c.is_number() => None,
        Filter::Compare(op, p, c) => {
            let at = path(p, params);
            match op {
                Op::Eq => Some(format!("{at} = {}::text::jsonb", param(c.to_string(), params))),
                Op::Neq => Some(format!(
                    "{at} IS DISTINCT FROM {}::text::jsonb",
                    param(c.to_string(), params)
                )),
                _ => {
                    let sign = match op {
                        Op::Gt => ">",
                        Op::Gte => ">=",
                        Op::Lt => "<",
                        _ => "<=",
                    };
                    Some(format!(
                        "(jsonb_typeof({at}) = 'number' AND ({at})::numeric {sign} {}::text::numeric)",
                        param(c.to_string(), params)
                    ))
                }
            }
        }
        Filter::In(p, list) => {
            let at = path(p, params);
            let values: Vec<String> = list
                .iter()
                .map(|v| format!("{}::text::jsonb", param(v.to_string(), params)))
                .collect();
            Some(format!("{at} = ANY(ARRAY[{}])", values.join(", ")))
        }
        Filter::And(all) => {
            let parts: Vec<String> = all
                .iter()
                .filter_map(|c| sql_prefilter(c, first, params))
                .collect();
            (!parts.is_empty()).then(|| format!("({})", parts.join(" AND ")))
        }
        Filter::Or(any) => {
            let parts = any
                .iter()
                .map(|c| sql_prefilter(c, first, params))
                .collect::<Option<Vec<_>>>()?;
            Some(format!("({})", parts.join(" OR ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows() -> Vec<(String, Value, ())> {
        [
            (
                "1",
                json!({"person": {"org": "Dev Ops", "id": 1036}, "city": "Seattle", "state": "WA"}),
            ),
            (
                "2",
                json!({"person": {"org": "Hardware", "id": 1028}, "city": "Portland", "state": "OR"}),
            ),
            (
                "3",
                json!({"person": {"org": "Finance", "id": 1071}, "city": "Sacramento", "state": "CA"}),
            ),
            (
                "4",
                json!({"person": {"org": "Dev Ops", "id": 1042}, "city": "Spokane", "state": "WA"}),
            ),
            ("5", json!("not an object")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v, ()))
        .collect()
    }

    fn keys(q: &str) -> (Vec<String>, Option<String>) {
        let (page, token) = run(&parse(q.as_bytes()).expect("query"), rows());
        (page.into_iter().map(|(k, _)| k).collect(), token)
    }

    #[test]
    fn filters_sorts_and_pages_as_dapr_documents() {
        assert_eq!(keys(r#"{"filter": {"EQ": {"state": "WA"}}}"#).0, ["1", "4"]);
        assert_eq!(
            keys(r#"{"filter": {"OR": [{"EQ": {"person.org": "Dev Ops"}}, {"AND": [{"EQ": {"person.org": "Finance"}}, {"IN": {"state": ["CA", "WA"]}}]}]}, "sort": [{"key": "state", "order": "DESC"}, {"key": "person.id"}]}"#).0,
            ["1", "4", "3"]
        );
        assert_eq!(keys(r#"{"filter": {"GT": {"person.id": 1036}}}"#).0, ["3", "4"]);
        assert_eq!(keys(r#"{"filter": {"LTE": {"person.id": 1036}}}"#).0, ["1", "2"]);
        assert_eq!(keys(r#"{"filter": {"NEQ": {"state": "WA"}}}"#).0, ["2", "3", "5"]);
        assert_eq!(
            keys(r#"{"sort": [{"key": "person.id", "order": "DESC"}], "page": {"limit": 2}}"#),
            (vec!["3".into(), "4".into()], Some("2".into()))
        );
        assert_eq!(
            keys(r#"{"sort": [{"key": "person.id", "order": "DESC"}], "page": {"limit": 2, "token": "2"}}"#),
            (vec!["1".into(), "2".into()], Some("4".into()))
        );
        assert_eq!(
            keys(r#"{"sort": [{"key": "person.id"}], "page": {"limit": 2, "token": "4"}}"#),
            (vec!["5".into()], None)
        );
        assert_eq!(keys("{}").0.len(), 5);
    }

    #[test]
    fn malformed_queries_are_named() {
        for (q, needle) in [
            (r#"{"filter": {"LIKE": {"a": 1}}}"#, "LIKE"),
            (r#"{"filter": {"EQ": {"a": 1, "b": 2}}}"#, "exactly one path"),
            (r#"{"filter": {"AND": []}}"#, "AND"),
            (r#"{"filter": {"IN": {"a": 1}}}"#, "IN"),
            (r#"{"sort": [{"key": "a", "order": "UP"}]}"#, "UP"),
            (r#"{"page": {"limit": -1}}"#, "limit"),
            (r#"{"page": {"token": "abc"}}"#, "token"),
            (r#"{"filters": {}}"#, "filters"),
            (r#"{"filter": {"EQ": {"a..b": 1}}}"#, "path"),
            ("[1]", "object"),
            ("{", "JSON"),
        ] {
            let e = parse(q.as_bytes()).expect_err(q);
            assert!(e.contains(needle), "{q}: {e}");
        }
        let deep = format!(
            "{}{{\"EQ\": {{\"a\": 1}}}}{}",
            "{\"AND\": [".repeat(40),
            "]}".repeat(40)
        );
        assert!(parse(format!("{{\"filter\": {deep}}}").as_bytes()).is_err());
    }

    #[test]
    fn sql_prefilters_keep_what_they_cannot_say() {
        let q = parse(br#"{"filter": {"AND": [{"EQ": {"a.b": "x"}}, {"GT": {"n": 3}}, {"LT": {"s": "m"}}, {"OR": [{"IN": {"t": [1, 2]}}, {"NEQ": {"u": null}}]}]}}"#)
            .expect("query");
        let mut params = Vec::new();
        let sql = sql_prefilter(q.filter.as_ref().expect("filter"), 1, &mut params).expect("sql");
        assert_eq!(
            sql,
            "((doc #> ARRAY[$2::text, $3::text]) = $4::text::jsonb AND (jsonb_typeof((doc #> ARRAY[$5::text])) = 'number' AND ((doc #> ARRAY[$5::text]))::numeric > $6::text::numeric) AND ((doc #> ARRAY[$7::text]) = ANY(ARRAY[$8::text::jsonb, $9::text::jsonb]) OR (doc #> ARRAY[$10::text]) IS DISTINCT FROM $11::text::jsonb))"
        );
        assert_eq!(params, ["a", "b", "\"x\"", "n", "3", "t", "1", "2", "u", "null"]);
        let half = parse(
            br#"{"filter": {"AND": [{"EQ": {"a": 1}}, {"OR": [{"EQ": {"k": 1}}, {"GT": {"s": "a"}}]}]}}"#,
        )
        .expect("query");
        let mut params = Vec::new();
        let sql = sql_prefilter(half.filter.as_ref().expect("filter"), 1, &mut params);
        assert_eq!(
            sql.as_deref(),
            Some("((doc #> ARRAY[$2::text]) = $3::text::jsonb)")
        );
        assert_eq!(
            params,
            ["a", "1"],
            "the OR that could not be said left no parameters"
        );
    }
}
