//! Routing rules: the part of CEL that Dapr's subscription `match`
//! expressions use, over the CloudEvent as `event`. Supported: field paths
//! (`event.type`, `event.data.order.total`), string, number, boolean and
//! `null` literals, `== != < <= > >=`, `&& || !`, parentheses, `has(path)`
//! and the string methods `startsWith`, `endsWith` and `contains`.
//! Expressions are parsed when a subscription loads, so a bad rule is
//! reported then, not at the first event.

use serde_json::{Map, Value};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    Path(Vec<String>),
    Has(Vec<String>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    Method(StrMethod, Box<Expr>, Box<Expr>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A string method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrMethod {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&ch) = b.get(i) else {
                    return Err("unterminated string".into());
                };
                match ch as char {
                    q if q == c => break,
                    '\\' => {
                        let esc = src[i + 1..].chars().next().ok_or("unterminated string")?;
                        s.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        i += esc.len_utf8();
                    }
                    _ => {
                        // Copy one whole UTF-8 character.
                        let len = src[i..].chars().next().map_or(1, char::len_utf8);
                        s.push_str(&src[i..i + len]);
                        i += len - 1;
                    }
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit()
            || (c == '-'
                && b.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !matches!(out.last(), Some(Tok::Ident(_) | Tok::Num(_) | Tok::Str(_))))
        {
            let start = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let n = src[start..i]
                .parse()
                .map_err(|_| format!("bad number {}", &src[start..i]))?;
            out.push(Tok::Num(n));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(src[start..i].to_string()));
        } else {
            let two = src.get(i..i + 2).unwrap_or_default();
            let op = ["==", "!=", "<=", ">=", "&&", "||"]
                .into_iter()
                .find(|o| *o == two);
            if let Some(op) = op {
                out.push(Tok::Op(op));
                i += 2;
            } else {
                let op = ["<", ">", "!", "(", ")", "."]
                    .into_iter()
                    .find(|o| o.as_bytes()[0] == b[i])
                    .ok_or_else(|| format!("unexpected character {c:?}"))?;
                out.push(Tok::Op(op));
                i += 1;
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("expected {op:?}"))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("expression nests too deeply".into());
        }
        let mut e = self.and()?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.cmp()?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.cmp()?));
        }
        Ok(e)
    }

    fn cmp(&mut self) -> Result<Expr, String> {
        let left = self.unary()?;
        let op = match self.peek() {
            Some(Tok::Op("==")) => Cmp::Eq,
            Some(Tok::Op("!=")) => Cmp::Ne,
            Some(Tok::Op("<")) => Cmp::Lt,
            Some(Tok::Op("<=")) => Cmp::Le,
            Some(Tok::Op(">")) => Cmp::Gt,
            Some(Tok::Op(">=")) => Cmp::Ge,
            _ => return Ok(left),
        };
        self.pos += 1;
        Ok(Expr::Cmp(op, Box::new(left), Box::new(self.unary()?)))
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let mut e = self.primary()?;
        // Method calls on a value: `event.type.startsWith("x")` lexes as a
        // path whose last segment is the method, so they are split here.
        if let Expr::Path(p) = &e
            && let Some(m) = p.last().and_then(|s| method(s))
            && p.len() > 1
            && matches!(self.peek(), Some(Tok::Op("(")))
        {
            let target = Expr::Path(p[..p.len() - 1].to_vec());
            self.expect("(")?;
            let arg = self.or()?;
            self.expect(")")?;
            e = Expr::Method(m, Box::new(target), Box::new(arg));
        }
        Ok(e)
    }

    fn path(&mut self, first: String) -> Result<Vec<String>, String> {
        let mut p = vec![first];
        while self.eat(".") {
            match self.toks.get(self.pos).cloned() {
                Some(Tok::Ident(s)) => {
                    self.pos += 1;
                    p.push(s);
                }
                _ => return Err("expected a field name after '.'".into()),
            }
        }
        if p[0] != "event" {
            return Err(format!("unknown name {:?}: fields start with event.", p[0]));
        }
        Ok(p[1..].to_vec())
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of expression")?;
        self.pos += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Num(n) => Ok(Expr::Lit(serde_json::json!(n))),
            Tok::Op("(") => {
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(id) => match id.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                "has" => {
                    self.expect("(")?;
                    let Some(Tok::Ident(first)) = self.toks.get(self.pos).cloned() else {
                        return Err("has() takes a field".into());
                    };
                    self.pos += 1;
                    let p = self.path(first)?;
                    self.expect(")")?;
                    Ok(Expr::Has(p))
                }
                _ => Ok(Expr::Path(self.path(id)?)),
            },
            Tok::Op(o) => Err(format!("unexpected {o:?}")),
        }
    }
}

fn method(name: &str) -> Option<StrMethod> {
    match name {
        "startsWith" => Some(StrMethod::StartsWith),
        "endsWith" => Some(StrMethod::EndsWith),
        "contains" => Some(StrMethod::Contains),
        _ => None,
    }
}

/// Parses a `match` expression.
pub fn parse(src: &str) -> Result<Expr, String> {
    let toks = lex(src).map_err(|e| format!("invalid match {src:?}: {e}"))?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.or().map_err(|e| format!("invalid match {src:?}: {e}"))?;
    if p.pos != p.toks.len() {
        return Err(format!(
            "invalid match {src:?}: unexpected text after the expression"
        ));
    }
    Ok(e)
}

fn lookup<'a>(event: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(event.get(first)?, |v, seg| v.get(seg))
}

fn value(e: &Expr, event: &Map<String, Value>) -> Option<Value> {
    match e {
        Expr::Lit(v) => Some(v.clone()),
        Expr::Path(p) => lookup(event, p).cloned(),
        other => Some(Value::Bool(truth(other, event))),
    }
}

fn compare(op: Cmp, a: &Value, b: &Value) -> bool {
    let ord = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match op {
        Cmp::Eq => ord.map_or(a == b, |o| o.is_eq()),
        Cmp::Ne => ord.map_or(a != b, |o| o.is_ne()),
        Cmp::Lt => ord.is_some_and(|o| o.is_lt()),
        Cmp::Le => ord.is_some_and(|o| o.is_le()),
        Cmp::Gt => ord.is_some_and(|o| o.is_gt()),
        Cmp::Ge => ord.is_some_and(|o| o.is_ge()),
    }
}

/// Evaluates an expression against an event; a missing field makes the
/// comparison that uses it false.
pub fn truth(e: &Expr, event: &Map<String, Value>) -> bool {
    match e {
        Expr::Lit(v) => v.as_bool().unwrap_or(false),
        Expr::Path(p) => lookup(event, p).and_then(Value::as_bool).unwrap_or(false),
        Expr::Has(p) => lookup(event, p).is_some(),
        Expr::Not(x) => !truth(x, event),
        Expr::And(a, b) => truth(a, event) && truth(b, event),
        Expr::Or(a, b) => truth(a, event) || truth(b, event),
        Expr::Cmp(op, a, b) => match (value(a, event), value(b, event)) {
            (Some(x), Some(y)) => compare(*op, &x, &y),
            _ => false,
        },
        Expr::Method(m, target, arg) => match (value(target, event), value(arg, event)) {
            (Some(Value::String(s)), Some(Value::String(a))) => match m {
                StrMethod::StartsWith => s.starts_with(&a),
                StrMethod::EndsWith => s.ends_with(&a),
                StrMethod::Contains => s.contains(&a),
            },
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, event: &Value) -> bool {
        let Value::Object(map) = event else {
            panic!("events are objects")
        };
        truth(&parse(src).expect("parses"), map)
    }

    #[test]
    fn rules_match_as_dapr_documents() {
        let ev = serde_json::json!({"type": "widget", "data": {"total": 250, "tier": "gold", "vip": true}, "source": "shop-eu"});
        assert!(eval(r#"event.type == "widget""#, &ev));
        assert!(!eval(r#"event.type != "widget""#, &ev));
        assert!(eval("event.data.total > 100 && event.data.total <= 250", &ev));
        assert!(eval(
            r#"event.type == "gadget" || event.data.tier == 'gold'"#,
            &ev
        ));
        assert!(eval("!(event.data.total < 100)", &ev));
        assert!(eval("event.data.vip", &ev));
        assert!(eval("has(event.data.tier) && !has(event.data.none)", &ev));
        assert!(eval(
            r#"event.source.startsWith("shop") && event.source.endsWith("-eu")"#,
            &ev
        ));
        assert!(eval(r#"event.type.contains("dg")"#, &ev));
        assert!(eval("event.data.total == 250.0", &ev));
        assert!(eval("event.data.total > -1", &ev));
        assert!(
            !eval("event.data.missing == 1", &ev),
            "a missing field matches nothing"
        );
        assert!(!eval(r#"event.data.total > "a""#, &ev), "no order across types");
        assert!(eval(r"event.a == 'é\é'", &serde_json::json!({"a": "éé"})));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for bad in [
            "event.type ==",
            "event.type = 'x'",
            "type == 'x'",
            "(event.type == 'x'",
            "'unterminated",
            "event.type == 'x' extra",
            "event.",
            "#",
            "",
            "'\\é",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.starts_with("invalid match"), "{bad}: {err}");
        }
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert!(parse(&deep).is_err());
    }
}
