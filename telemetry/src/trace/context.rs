//! Trace context as it travels: W3C `traceparent` text over HTTP and
//! OpenCensus's binary `grpc-trace-bin` over gRPC (Dapr sends both).

/// The W3C header carrying the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor state; passed on unchanged.
pub const TRACESTATE: &str = "tracestate";
/// The W3C header carrying user key/values; passed on unchanged.
pub const BAGGAGE: &str = "baggage";
/// The gRPC metadata key of the binary form.
pub const GRPC_TRACE_BIN: &str = "grpc-trace-bin";

/// Dapr drops a `tracestate` longer than this.
const MAX_TRACESTATE: usize = 512;
/// W3C allows at most this many `tracestate` members.
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// W3C's limit on a `baggage` header.
const MAX_BAGGAGE: usize = 8192;

/// One span's place in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// W3C trace flags; bit 0 is "sampled".
    pub flags: u8,
}

/// Each byte's value as a hex digit, or 0xff: one lookup per character
/// instead of three range tests, on every traced request.
const UNHEX: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        t[b"0123456789abcdef"[i] as usize] = i as u8;
        t[b"0123456789ABCDEF"[i] as usize] = i as u8;
        i += 1;
    }
    t
};

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (UNHEX[usize::from(pair[0])], UNHEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = hi << 4 | lo & 0xf;
    }
    (bad < 16).then_some(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`, written into `out` (twice as long).
fn put_hex(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    put_hex(bytes, &mut out);
    // Only ASCII hex digits were written.
    String::from_utf8(out).unwrap_or_default()
}

impl SpanContext {
    /// Whether the span is recorded and exported.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// A `traceparent` value: `00-<trace id>-<span id>-<flags>`. Versions
    /// above 00 are read by their first four fields, as W3C asks; `ff`,
    /// zero ids and malformed hex are refused.
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim().as_bytes();
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let [version] = unhex::<1>(&v[..2])?;
        if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let trace_id = unhex::<16>(&v[3..35])?;
        let span_id = unhex::<8>(&v[36..52])?;
        let [flags] = unhex::<1>(&v[53..55])?;
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The `traceparent` bytes (always 55 ASCII characters).
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        put_hex(&self.trace_id, &mut out[3..35]);
        put_hex(&self.span_id, &mut out[36..52]);
        put_hex(&[self.flags], &mut out[53..55]);
        out
    }

    /// The `traceparent` value.
    pub fn traceparent(&self) -> String {
        String::from_utf8_lossy(&self.traceparent_bytes()).into_owned()
    }

    /// The binary form: version 0, then field 0 (trace id), field 1 (span
    /// id) and field 2 (options), each after its one-byte tag.
    pub fn to_binary(&self) -> [u8; 29] {
        let mut out = [0u8; 29];
        out[1] = 0;
        out[2..18].copy_from_slice(&self.trace_id);
        out[18] = 1;
        out[19..27].copy_from_slice(&self.span_id);
        out[27] = 2;
        out[28] = self.flags & 1;
        out
    }

    /// Reads the binary form; the options field may be absent (not sampled).
    pub fn from_binary(b: &[u8]) -> Option<Self> {
        let (&version, mut rest) = b.split_first()?;
        if version != 0 {
            return None;
        }
        let mut ctx = Self {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        let mut next_field = 0u8;
        while let Some((&field, tail)) = rest.split_first() {
            // Fields come in order; an unknown one ends what can be read.
            if field < next_field || field > 2 {
                break;
            }
            let len = [16usize, 8, 1][usize::from(field)];
            let value = tail.get(..len)?;
            match field {
                0 => ctx.trace_id.copy_from_slice(value),
                1 => ctx.span_id.copy_from_slice(value),
                _ => ctx.flags = value[0] & 1,
            }
            next_field = field + 1;
            rest = &tail[len..];
        }
        (ctx.trace_id != [0; 16] && ctx.span_id != [0; 8]).then_some(ctx)
    }
}

/// Whether a `tracestate` header is well formed enough to pass on:
/// comma-separated `key=value` members, at most 32 of them and 512 bytes.
pub fn valid_tracestate(value: &str) -> bool {
    if value.len() > MAX_TRACESTATE {
        return false;
    }
    let mut members = 0;
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        members += 1;
        let Some((key, val)) = member.split_once('=') else {
            return false;
        };
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && key
                .bytes()
                .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'));
        let val_ok = !val.is_empty()
            && val.len() <= 256
            && val
                .bytes()
                .all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
            && !val.ends_with(' ');
        if !key_ok || !val_ok {
            return false;
        }
    }
    members <= MAX_TRACESTATE_MEMBERS
}

/// Whether a `baggage` header is well formed: comma-separated
/// `key=value[;property]` members whose keys are HTTP tokens.
pub fn valid_baggage(value: &str) -> bool {
    if value.len() > MAX_BAGGAGE {
        return false;
    }
    value.split(',').all(|member| {
        let pair = member
            .split(';')
            .next()
            .unwrap_or_default()
            .trim_matches([' ', '\t']);
        let Some((key, val)) = pair.split_once('=') else {
            return false;
        };
        let key = key.trim_matches([' ', '\t']);
        let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
        !key.is_empty()
            && key.bytes().all(token)
            && val.trim_matches([' ', '\t']).bytes().all(|c| {
                c == 0x21
                    || (0x23..=0x2b).contains(&c)
                    || (0x2d..=0x3a).contains(&c)
                    || (0x3c..=0x5b).contains(&c)
                    || (0x5d..=0x7e).contains(&c)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const W3C: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparent_reads_and_writes_the_w3c_example() {
        let ctx = SpanContext::parse(W3C).expect("valid in the test");
        assert!(ctx.sampled());
        assert_eq!(hex(&ctx.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex(&ctx.span_id), "b7ad6b7169203331");
        assert_eq!(ctx.traceparent(), W3C);
        let unsampled = SpanContext::parse(&W3C.replace("-01", "-00")).expect("valid in the test");
        assert!(!unsampled.sampled());
    }

    #[test]
    fn traceparent_refuses_what_w3c_refuses() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields after the four it shares.
        let later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes";
        assert!(SpanContext::parse(later).is_some());
    }

    #[test]
    fn the_binary_form_round_trips_and_matches_opencensus_layout() {
        let ctx = SpanContext::parse(W3C).expect("valid in the test");
        let bin = ctx.to_binary();
        assert_eq!(&bin[..2], &[0, 0]);
        assert_eq!(bin[18], 1);
        assert_eq!(&bin[27..], &[2, 1]);
        assert_eq!(SpanContext::from_binary(&bin), Some(ctx));
        // Without the options field the span is not sampled.
        let short = SpanContext::from_binary(&bin[..27]).expect("valid in the test");
        assert!(!short.sampled());
        assert_eq!(SpanContext::from_binary(&bin[..10]), None);
        assert_eq!(SpanContext::from_binary(&[1, 0]), None);
        assert_eq!(SpanContext::from_binary(&[]), None);
    }

    #[test]
    fn tracestate_and_baggage_are_checked() {
        assert!(valid_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
        assert!(valid_tracestate("tenant@vendor=x"));
        assert!(!valid_tracestate("novalue"));
        assert!(!valid_tracestate("Upper=x"));
        assert!(!valid_tracestate(&"a=b,".repeat(40)));
        assert!(valid_baggage(
            "userId=alice,serverNode=DF%2028,isProduction=false;p=1"
        ));
        assert!(!valid_baggage("no-equals"));
        assert!(!valid_baggage("bad key=v"));
        assert!(!valid_baggage("k=va lue"));
    }
}
