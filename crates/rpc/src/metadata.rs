//! Call metadata between HTTP headers and the data channel's `Metadata`, one rule each way,
//! used by both ends.
//!
//! The data channel carries metadata as strings (protobuf `string`, so UTF-8). HTTP carries
//! `-bin` values base64-encoded. The rule for `-bin` keys, both ways: a value that already
//! reads as base64 (padded or not — gRPC requires receivers to accept both) travels as it is;
//! a value that does not is taken as raw bytes and encoded, unpadded as gRPC emits them. Both
//! official clients accept that: grpc-go and tonic decode either padding. Other keys must be
//! valid header values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::framing::Metadata;

/// A metadata entry that cannot become an HTTP header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The key is not a header name.
    #[error("invalid metadata key {0:?}")]
    InvalidKey(String),
    /// The value is not a header value.
    #[error("invalid value for metadata key {0:?}")]
    InvalidValue(String),
}

/// What to do with an entry that cannot become a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    /// Fail the whole conversion (a request: the caller gets `INVALID_ARGUMENT`).
    Fail,
    /// Leave the entry out (an answer: the call still completes).
    Skip,
}

/// Whether a `-bin` value already reads as base64.
fn is_base64(value: &str) -> bool {
    STANDARD_NO_PAD.decode(value.trim_end_matches('=')).is_ok()
}

/// Metadata as HTTP headers, keys lower-cased; entries for which `skip` is true are left out.
pub fn metadata_to_headers(
    metadata: &Metadata,
    skip: impl Fn(&str) -> bool,
    on_invalid: OnInvalid,
) -> Result<HeaderMap, MetadataError> {
    let mut headers = HeaderMap::new();
    for (key, values) in metadata {
        let key = key.to_ascii_lowercase();
        if skip(&key) {
            continue;
        }
        let name = match HeaderName::from_bytes(key.as_bytes()) {
            Ok(name) => name,
            Err(_) if on_invalid == OnInvalid::Skip => continue,
            Err(_) => return Err(MetadataError::InvalidKey(key)),
        };
        for value in values {
            let value = if key.ends_with("-bin") && !is_base64(value) {
                HeaderValue::from_str(&STANDARD_NO_PAD.encode(value))
            } else {
                HeaderValue::from_str(value)
            };
            match value {
                Ok(value) => {
                    headers.append(name.clone(), value);
                }
                Err(_) if on_invalid == OnInvalid::Skip => {}
                Err(_) => return Err(MetadataError::InvalidValue(key)),
            }
        }
    }
    Ok(headers)
}

/// HTTP headers as metadata, values grouped by name in the order names first appear; headers
/// for which `skip` is true, and values that are not visible ASCII (so not a metadata string
/// either way), are left out. `-bin` values are base64 already and stay so.
pub fn headers_to_metadata(headers: &HeaderMap, skip: impl Fn(&str) -> bool) -> Metadata {
    let mut metadata: Metadata = Vec::new();
    for (name, value) in headers {
        let key = name.as_str();
        if skip(key) {
            continue;
        }
        let Ok(value) = value.to_str() else {
            continue;
        };
        match metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, values)) => values.push(value.to_string()),
            None => metadata.push((key.to_string(), vec![value.to_string()])),
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(entries: &[(&str, &[&str])]) -> Metadata {
        entries
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    #[test]
    fn bin_values_are_base64_once_whatever_padding_they_came_with() {
        let h = metadata_to_headers(
            &md(&[
                ("Raw-Bin", &["\u{1}\u{2}"]),
                ("padded-bin", &["AQI="]),
                ("unpadded-bin", &["AQI"]),
                ("x", &["1", "2"]),
            ]),
            |_| false,
            OnInvalid::Fail,
        )
        .unwrap();
        assert_eq!(h["raw-bin"], "AQI");
        assert_eq!(h["padded-bin"], "AQI=");
        assert_eq!(h["unpadded-bin"], "AQI");
        let xs: Vec<_> = h.get_all("x").iter().collect();
        assert_eq!(xs, ["1", "2"]);
        // Both paddings decode to the same bytes, as every gRPC receiver must accept.
        for v in ["AQI", "AQI="] {
            assert_eq!(
                STANDARD_NO_PAD.decode(v.trim_end_matches('=')).unwrap(),
                [1, 2]
            );
        }
    }

    #[test]
    fn invalid_entries_fail_or_are_skipped() {
        let bad_key = md(&[("bad key", &["v"]), ("ok", &["1"])]);
        assert_eq!(
            metadata_to_headers(&bad_key, |_| false, OnInvalid::Fail),
            Err(MetadataError::InvalidKey("bad key".into()))
        );
        let h = metadata_to_headers(&bad_key, |_| false, OnInvalid::Skip).unwrap();
        assert_eq!(h.len(), 1);
        let bad_value = md(&[("k", &["line\nbreak"])]);
        assert_eq!(
            metadata_to_headers(&bad_value, |_| false, OnInvalid::Fail),
            Err(MetadataError::InvalidValue("k".into()))
        );
        let skipped = metadata_to_headers(&md(&[("te", &["x"])]), |k| k == "te", OnInvalid::Fail);
        assert!(skipped.unwrap().is_empty());
    }

    #[test]
    fn headers_group_in_first_appearance_order() {
        let mut h = HeaderMap::new();
        h.append("b", HeaderValue::from_static("1"));
        h.append("a", HeaderValue::from_static("2"));
        h.append("b", HeaderValue::from_static("3"));
        h.append("skip", HeaderValue::from_static("4"));
        h.append("bin-bin", HeaderValue::from_static("AQI"));
        h.append("c", HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(
            headers_to_metadata(&h, |k| k == "skip"),
            md(&[("b", &["1", "3"]), ("a", &["2"]), ("bin-bin", &["AQI"])])
        );
    }
}
