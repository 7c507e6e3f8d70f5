//! A sampled span's record: its name, attribute values and error text live
//! one after another in a single buffer, so recording a span costs one
//! allocation however many attributes it carries.

use super::{SpanContext, SpanKind};

/// Attributes past this many are not kept; Dapr's spans carry at most eight.
pub const MAX_ATTRIBUTES: usize = 12;

/// A piece of [`SpanData::text`].
#[derive(Clone, Copy, Debug, Default)]
struct Slice {
    start: u32,
    end: u32,
}

/// A finished span, as exporters receive it.
#[derive(Clone, Debug)]
pub struct SpanData {
    pub kind: SpanKind,
    pub context: SpanContext,
    /// The parent's span id, when the span has one.
    pub parent: Option<[u8; 8]>,
    /// Nanoseconds since the Unix epoch.
    pub start: u64,
    pub end: u64,
    text: String,
    name: Slice,
    attributes: [(&'static str, Slice); MAX_ATTRIBUTES],
    len: u8,
    /// Set when the span failed, with what failed.
    error: Option<Slice>,
}

impl SpanData {
    /// An unnamed span with no attributes, begun at `start`.
    pub fn new(kind: SpanKind, context: SpanContext, parent: Option<[u8; 8]>, start: u64) -> Self {
        Self {
            kind,
            context,
            parent,
            start,
            end: start,
            // Room for a name and Dapr's attributes of an API call.
            text: String::with_capacity(192),
            name: Slice::default(),
            attributes: [("", Slice::default()); MAX_ATTRIBUTES],
            len: 0,
            error: None,
        }
    }

    fn push(&mut self, parts: &[&str]) -> Slice {
        let start = self.text.len();
        for p in parts {
            self.text.push_str(p);
        }
        // Offsets are kept in 32 bits: text past 4 GiB is not recorded.
        match (u32::try_from(start), u32::try_from(self.text.len())) {
            (Ok(start), Ok(end)) => Slice { start, end },
            _ => {
                self.text.truncate(start);
                Slice::default()
            }
        }
    }

    fn get(&self, s: Slice) -> &str {
        self.text
            .get(s.start as usize..s.end as usize)
            .unwrap_or_default()
    }

    /// Names the span with `parts` joined.
    pub fn set_name(&mut self, parts: &[&str]) {
        self.name = self.push(parts);
    }

    /// Adds attribute `key` with `parts` joined as its value; an empty value
    /// is left out.
    pub fn add_attribute(&mut self, key: &'static str, parts: &[&str]) {
        let i = usize::from(self.len);
        if i == MAX_ATTRIBUTES || parts.iter().all(|p| p.is_empty()) {
            return;
        }
        let value = self.push(parts);
        self.attributes[i] = (key, value);
        self.len += 1;
    }

    /// Marks the span failed, with what failed.
    pub fn set_error(&mut self, message: &str) {
        self.error = Some(self.push(&[message]));
    }

    pub fn name(&self) -> &str {
        self.get(self.name)
    }

    /// The attributes, in the order they were added.
    pub fn attributes(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.attributes[..usize::from(self.len)]
            .iter()
            .map(|&(k, v)| (k, self.get(v)))
    }

    pub fn error(&self) -> Option<&str> {
        self.error.map(|e| self.get(e))
    }

    /// A copy without the error, for tests of the exporters.
    #[cfg(test)]
    pub(crate) fn without_error(&self) -> Self {
        Self {
            error: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_attributes_and_errors_share_one_buffer() {
        let ctx = SpanContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            flags: 1,
        };
        let mut s = SpanData::new(SpanKind::Server, ctx, None, 7);
        s.add_attribute("dapr.api", &["POST", " ", "/v1.0/state/s"]);
        s.add_attribute("empty", &["", ""]);
        s.set_name(&["CallLocal/", "app", "/", "m"]);
        s.set_error("NotFound");
        assert_eq!(s.name(), "CallLocal/app/m");
        assert_eq!(
            s.attributes().collect::<Vec<_>>(),
            [("dapr.api", "POST /v1.0/state/s")]
        );
        assert_eq!(s.error(), Some("NotFound"));
        for i in 0..20 {
            s.add_attribute("k", &[&i.to_string()]);
        }
        assert_eq!(s.attributes().count(), MAX_ATTRIBUTES);
    }
}
